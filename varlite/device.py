"""Which device a command runs on: ``auto`` picks the best available one, a named one is checked first; and what
the CPU can do fast (the matrix instructions that decide whether bfloat16 pays).

Below the loaders and the trainers; imports nothing else of varlite.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

# CPU flags (as /proc/cpuinfo names them) that run bfloat16 matmuls natively, best first, with their usual names
BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX-512-BF16"}


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: cuda (this process's GPU under torchrun) if available, else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not one varlite runs on; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; use --device auto or cpu")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} was asked for but MPS (Apple GPU) is not available; use --device auto "
                         f"or cpu")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU (Linux: /proc/cpuinfo; elsewhere empty)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_features() -> str:
    """What the CPU offers for matmuls, in words: the bfloat16 units (AMX-BF16, AVX-512-BF16) or their absence,
    and the vector instructions PyTorch's kernels use here (``torch.backends.cpu.get_cpu_capability()``)."""
    flags = cpu_flags()
    bf16 = [name for flag, name in BF16_CPU_FLAGS.items() if flag in flags]
    units = ", ".join(bf16) if bf16 else "no AMX, no AVX-512-BF16"
    return f"{units}; PyTorch kernels: {torch.backends.cpu.get_cpu_capability()}"


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds up matmuls on ``device``: a CUDA GPU that supports bfloat16, or a CPU with
    AMX-BF16 or AVX-512-BF16. Elsewhere (e.g. AVX2 only) bfloat16 is converted in software and is slower than
    float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_flags() & set(BF16_CPU_FLAGS))
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``fast_bf16(device)``, else ``fp32``; ``fp32`` / ``bf16`` are kept as asked."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def available_memory_bytes() -> int | None:
    """Memory the machine can give now without swapping: ``MemAvailable`` of /proc/meminfo (Linux), else the free
    physical pages (``os.sysconf``, other Unix systems); None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
