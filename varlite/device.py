"""Which device a command runs on: ``auto`` picks the best available one, a named one is checked first.

Below the loaders and the trainers; imports nothing else of varlite.
"""
from __future__ import annotations

import torch


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: cuda (this process's GPU under torchrun) if available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; use --device auto or cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} was asked for but MPS (Apple GPU) is not available; use --device auto or cpu")
    return device
