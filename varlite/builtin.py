"""The models shipped with varlite (``varlite/weights/<name>.pth``, each with a model card ``<name>.md``).

A weights file is a plain dict read with ``torch.load(weights_only=True)``:

    {"format": "varlite-builtin", "version": 1, "preset": <name in varlite.configs.PRESETS>,
     "vqvae": VQVAE state dict, "var": VAR state dict,
     "sampling": {"cfg": float, "top_k": int, "top_p": float}}    # the settings its model card recommends

Floating-point tensors are stored as float16 (half the size) and turned back into float32 when loaded; the
metrics in the model cards were measured on these loaded (float16-rounded) weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .configs import get_preset
from .var import VAR
from .vqvae import VQVAE

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = "varlite-builtin"
VERSION = 1
DEFAULT_SAMPLING = {"cfg": 1.5, "top_k": 0, "top_p": 0.0}


class BuiltinError(RuntimeError):
    """A built-in model is unknown, missing, or its file is damaged."""


def list_builtin() -> list[str]:
    """Names of the shipped models (those with a weights file), sorted."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pth"))


def weights_path(name: str) -> Path:
    path = WEIGHTS_DIR / f"{name}.pth"
    if not path.is_file():
        raise BuiltinError(f"no built-in model named {name!r} (no {path}); available: {list_builtin()}")
    return path


def model_card(name: str) -> str:
    """The model card (markdown) of a shipped model: config, data, command, wall time, machine, metrics."""
    weights_path(name)
    card = WEIGHTS_DIR / f"{name}.md"
    if not card.is_file():
        raise BuiltinError(f"the built-in model {name!r} has no model card {card}")
    return card.read_text()


def sampling_defaults(name: str) -> dict:
    """The sampling settings (cfg, top_k, top_p) a shipped model's card recommends, e.g. for ``var.generate(**...)``."""
    blob = _read(name)
    return dict(blob.get("sampling", DEFAULT_SAMPLING))


def builtin_preset(name: str) -> str:
    """The preset (``varlite.configs``) a shipped model was built with."""
    return _read(name)["preset"]


def load_builtin(name: str = "shapes", device: str | torch.device = "cpu") -> tuple[VQVAE, VAR]:
    """The shipped (vqvae, var) pair ``name``, in eval mode, float32, on ``device``."""
    blob = _read(name)
    preset = get_preset(blob["preset"])
    vqvae = VQVAE(preset.vqvae)
    var = VAR(preset.var, vqvae)
    vqvae.load_state_dict(_to_float32(blob["vqvae"]))
    var.load_state_dict(_to_float32(blob["var"]))
    vqvae.to(device).eval()
    var.to(device).eval()
    return vqvae, var


def _read(name: str) -> dict:
    path = weights_path(name)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:      # torch raises several types for damaged files; all mean the same here
        raise BuiltinError(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]}); reinstall varlite "
                           f"to restore the file") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("version") != VERSION:
        raise BuiltinError(f"{path} is not a varlite built-in weights file (format {FORMAT!r} version {VERSION})")
    return blob


def save_builtin(path: str | os.PathLike, preset: str, vqvae: VQVAE, var: VAR, sampling: dict | None = None) -> Path:
    """Write a weights file in the format above (float tensors as float16)."""
    get_preset(preset)
    path = Path(path)
    blob = {"format": FORMAT, "version": VERSION, "preset": preset,
            "vqvae": _to_float16(vqvae.state_dict()), "var": _to_float16(var.state_dict()),
            "sampling": {**DEFAULT_SAMPLING, **(sampling or {})}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _to_float16(state: dict) -> dict:
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def _to_float32(state: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
