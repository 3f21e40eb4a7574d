"""The models shipped with varlite (``varlite/weights/<name>.pth``, each with a model card ``<name>.md``).

A weights file is a plain dict read with ``torch.load(weights_only=True)``:

    {"format": "varlite-builtin", "version": 1 or 2, "preset": <name in varlite.core.configs.PRESETS>,
     "vqvae": VQVAE state dict, "var": VAR state dict,
     "sampling": {"cfg": float, "top_k": int, "top_p": float},   # the settings its model card recommends
     "int8_scales": {"vqvae": {key: scale}, "var": {key: scale}}} # version 2 only

Version 1 (``storage="float16"``): floating-point tensors are stored as float16 (half the size). Version 2
(``storage="int8"``, a quarter of the size, to keep a larger model under 10 MB): every float matrix or conv kernel
of at least 4,096 finite values (not the -inf attention mask) is stored as int8 with one float16 scale per output row, w ~ q * scale, q = round(w /
scale) in [-127, 127], scale = max |w_row| / 127; the other float tensors as float16. Both are turned back into
float32 when loaded, and the metrics in the model cards were measured on these loaded (rounded) weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .core.configs import get_preset
from .core.var import VAR
from .core.vqvae import VQVAE

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = "varlite-builtin"
VERSION = 1               # float16 storage; version 2 = int8 storage (see above)
INT8_MIN_NUMEL = 4096
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
    """The preset (``varlite.core.configs``) a shipped model was built with."""
    return _read(name)["preset"]


def load_builtin(name: str = "shapes", device: str | torch.device = "cpu") -> tuple[VQVAE, VAR]:
    """The shipped (vqvae, var) pair ``name``, in eval mode, float32, on ``device``."""
    blob = _read(name)
    preset = get_preset(blob["preset"])
    vqvae = VQVAE(preset.vqvae)
    var = VAR(preset.var, vqvae)
    scales = blob.get("int8_scales", {})
    vqvae.load_state_dict(_to_float32(blob["vqvae"], scales.get("vqvae", {})))
    var.load_state_dict(_to_float32(blob["var"], scales.get("var", {})))
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
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("version") not in (1, 2):
        raise BuiltinError(f"{path} is not a varlite built-in weights file (format {FORMAT!r} version 1 or 2)")
    return blob


def save_builtin(path: str | os.PathLike, preset: str, vqvae: VQVAE, var: VAR, sampling: dict | None = None,
                 storage: str = "float16") -> Path:
    """Write a weights file in the format above: ``storage`` "float16" (version 1) or "int8" (version 2)."""
    get_preset(preset)
    if storage not in ("float16", "int8"):
        raise ValueError(f"storage must be 'float16' or 'int8', got {storage!r}")
    path = Path(path)
    blob = {"format": FORMAT, "version": 1 if storage == "float16" else 2, "preset": preset,
            "sampling": {**DEFAULT_SAMPLING, **(sampling or {})}}
    if storage == "float16":
        blob["vqvae"], blob["var"] = _to_float16(vqvae.state_dict()), _to_float16(var.state_dict())
    else:
        (blob["vqvae"], vq_scales), (blob["var"], var_scales) = _to_int8(vqvae.state_dict()), _to_int8(var.state_dict())
        blob["int8_scales"] = {"vqvae": vq_scales, "var": var_scales}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _to_float16(state: dict) -> dict:
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def _to_int8(state: dict) -> tuple[dict, dict]:
    """(state with large float tensors as int8 and the rest as float16, {key: per-row float16 scale})."""
    out, scales = _to_float16(state), {}
    for k, v in state.items():
        if v.is_floating_point() and v.ndim >= 2 and v.numel() >= INT8_MIN_NUMEL and bool(v.isfinite().all()):
            w = v.detach().cpu().float().flatten(1)
            scale = (w.abs().amax(1) / 127).clamp_min(1e-12).half()
            out[k] = (w / scale.float()[:, None]).round().clamp(-127, 127).to(torch.int8).view(v.shape)
            scales[k] = scale
    return out, scales


def _to_float32(state: dict, int8_scales: dict | None = None) -> dict:
    out = {}
    for k, v in state.items():
        if int8_scales and k in int8_scales:
            scale = int8_scales[k].float().view(-1, *([1] * (v.ndim - 1)))
            out[k] = v.float() * scale
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out
