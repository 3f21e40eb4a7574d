"""The models shipped with varlite (``varlite/weights/<name>.safetensors``, each with a model card ``<name>.md``).

A weights file is a safetensors file: a JSON header and raw tensor bytes, no pickle, so reading it cannot run code;
it is read memory-mapped. It holds

    tensors   "vqvae.<key>", "var.<key>"       the VQVAE and VAR state dicts, stored as below
              "int8_scale.<model>.<key>"       int8 storage only: the per-row scales of the int8 tensors
    metadata  "format": "varlite-builtin", "version": "3",
              "preset": a name in varlite.core.configs.PRESETS,
              "storage": "float16" or "int8",
              "sampling": JSON {"cfg": float, "top_k": int, "top_p": float}   (what its model card recommends)

Storage "float16": floating-point tensors are stored as float16 (half the size). Storage "int8" (a quarter of the
size, to keep a larger model under 10 MB): every float matrix or conv kernel of at least 4,096 finite values (not
the -inf attention mask) is stored as int8 with one float16 scale per output row, w ~ q * scale,
q = round(w / scale) in [-127, 127], scale = max |w_row| / 127; the other float tensors as float16. Both are turned
back into float32 when loaded, and the metrics in the model cards were measured on these loaded (rounded) weights.
(Versions 1 and 2 of the format held the same tensors in a pickled ``.pth`` file.)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .core.configs import get_preset
from .core.var import VAR
from .core.vqvae import VQVAE
from .safe_io import check_finite

WEIGHTS_DIR = Path(__file__).parent / "weights"
SUFFIX = ".safetensors"
FORMAT = "varlite-builtin"
VERSION = "3"
MODELS = ("vqvae", "var")
SCALE_PREFIX = "int8_scale."
INT8_MIN_NUMEL = 4096
DEFAULT_SAMPLING = {"cfg": 1.5, "top_k": 0, "top_p": 0.0}


class BuiltinError(RuntimeError):
    """A built-in model is unknown, missing, or its file is damaged."""


def list_builtin() -> list[str]:
    """Names of the shipped models (those with a weights file), sorted."""
    return sorted(p.name.removesuffix(SUFFIX) for p in WEIGHTS_DIR.glob(f"*{SUFFIX}"))


def weights_path(name: str) -> Path:
    path = WEIGHTS_DIR / f"{name}{SUFFIX}"
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
    return json.loads(_metadata(weights_path(name))["sampling"])


def builtin_preset(name: str) -> str:
    """The preset (``varlite.core.configs``) a shipped model was built with."""
    return _metadata(weights_path(name))["preset"]


def load_builtin(name: str = "shapes", device: str | torch.device = "cpu") -> tuple[VQVAE, VAR]:
    """The shipped (vqvae, var) pair ``name``, in eval mode, float32, on ``device``."""
    path = weights_path(name)
    preset = get_preset(_metadata(path)["preset"])
    stored, scales = _read_tensors(path)
    vqvae = VQVAE(preset.vqvae)
    var = VAR(preset.var, vqvae)
    vqvae.load_state_dict(_to_float32(stored["vqvae"], scales["vqvae"]))
    var.load_state_dict(_to_float32(stored["var"], scales["var"]))
    check_finite(vqvae, f"{path} (VQVAE)")
    check_finite(var, f"{path} (VAR)")
    vqvae.to(device).eval()
    var.to(device).eval()
    return vqvae, var


def save_builtin(path: str | os.PathLike, preset: str, vqvae: VQVAE, var: VAR, sampling: dict | None = None,
                 storage: str = "float16") -> Path:
    """Write a weights file in the format above, with ``storage`` "float16" or "int8"; returns its path, which is
    ``path`` with the suffix ``.safetensors`` (any other suffix, e.g. ``.pth``, is replaced)."""
    get_preset(preset)
    if storage not in ("float16", "int8"):
        raise ValueError(f"storage must be 'float16' or 'int8', got {storage!r}")
    states = {"vqvae": vqvae.state_dict(), "var": var.state_dict()}
    if storage == "float16":
        stored, scales = {m: _to_float16(sd) for m, sd in states.items()}, {m: {} for m in MODELS}
    else:
        quantized = {m: _to_int8(sd) for m, sd in states.items()}
        stored, scales = {m: q[0] for m, q in quantized.items()}, {m: q[1] for m, q in quantized.items()}
    return write_weights(path, preset, {**DEFAULT_SAMPLING, **(sampling or {})}, storage, stored, scales)


def write_weights(path: str | os.PathLike, preset: str, sampling: dict, storage: str,
                  stored: dict[str, dict[str, torch.Tensor]], scales: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write tensors already in their stored form (``stored[model][key]``, ``scales[model][key]``), atomically."""
    path = Path(path).with_suffix(SUFFIX)
    tensors = {f"{m}.{k}": v.contiguous() for m in MODELS for k, v in stored[m].items()}
    tensors |= {f"{SCALE_PREFIX}{m}.{k}": v.contiguous() for m in MODELS for k, v in scales[m].items()}
    metadata = {"format": FORMAT, "version": VERSION, "preset": preset, "storage": storage,
                "sampling": json.dumps(sampling)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)
    return path


def _metadata(path: Path) -> dict[str, str]:
    """The header's metadata, checked to be a varlite built-in of this version."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:      # safetensors raises several types for damaged files; all mean the same here
        raise BuiltinError(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]}); reinstall varlite "
                           f"to restore the file") from err
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise BuiltinError(f"{path} is not a varlite built-in weights file (format {FORMAT!r} version {VERSION})")
    return metadata


def _read_tensors(path: Path) -> tuple[dict, dict]:
    """({model: {key: stored tensor}}, {model: {key: int8 scale}}), read memory-mapped."""
    stored, scales = {m: {} for m in MODELS}, {m: {} for m in MODELS}
    try:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                target = scales if name.startswith(SCALE_PREFIX) else stored
                model, key = name.removeprefix(SCALE_PREFIX).split(".", 1)
                target[model][key] = f.get_tensor(name)
    except Exception as err:      # as in _metadata
        raise BuiltinError(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]}); reinstall varlite "
                           f"to restore the file") from err
    return stored, scales


def _to_float16(state: dict) -> dict:
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu().clone()
            for k, v in state.items()}


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


def _to_float32(state: dict, int8_scales: dict) -> dict:
    out = {}
    for k, v in state.items():
        if k in int8_scales:
            scale = int8_scales[k].float().view(-1, *([1] * (v.ndim - 1)))
            out[k] = v.float() * scale
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out
