"""Training checkpoints: one ``.pt`` file per run, written atomically and read with ``torch.load(weights_only=True)``
(``varlite.safe_io.read_torch_file``, the safe reading every varlite loader shares).

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts only, so the safe loader accepts it):

    format "varlite-train", version, kind ("tokenizer" | "var" | "classifier"), step, the configs as dicts,
    state dicts of the models and of the optimizer, the RNG states of every process, training bookkeeping.

Atomic write: save to ``<path>.tmp`` in the same folder, flush to disk, then ``os.replace`` it over ``<path>``,
so an interruption leaves either the old checkpoint or the new one, never half a file.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..safe_io import CheckpointError, read_torch_file

FORMAT = "varlite-train"
VERSION = 1
KINDS = ("tokenizer", "var", "classifier")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format and version) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, mmap: bool = False) -> dict:
    """Read a checkpoint safely and check its format, its kind (when given) and that its entries "configs", "model"
    and "step" are there; raise CheckpointError if wrong. ``mmap``: the tensors are memory-mapped from the file, not
    read (a reader that wants only the model never reads the optimizer state into memory)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a checkpoint written by "
                              f"varlite's trainer (e.g. runs/<name>/checkpoint.pt)")
    ckpt = read_torch_file(path, remedy="the checkpoint cannot be read: delete it and retrain, or resume from an "
                                        "older copy", mmap=mmap)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a varlite training checkpoint (expected a dict with format={FORMAT!r}). "
                              f"Official VAR weights load with varlite.pretrained; built-in ones with "
                              f"varlite.builtin.load_builtin.")
    if ckpt.get("version") != VERSION:          # the file's own strings are never quoted: they could be anything
        raise CheckpointError(f"{path} has a checkpoint version this varlite does not read (it reads version "
                              f"{VERSION})")
    if kind is not None and ckpt.get("kind") != kind:
        found = f"a {ckpt['kind']!r}" if ckpt.get("kind") in KINDS else "an unknown kind of"
        raise CheckpointError(f"{path} is {found} checkpoint, but a {kind!r} checkpoint is needed here")
    for key, kinds in (("configs", dict), ("model", dict), ("step", int)):
        if not isinstance(ckpt.get(key), kinds):
            raise CheckpointError(f"{path} is damaged: its '{key}' entry is missing or of the wrong type (a "
                                  f"{kinds.__name__} is expected); delete it and retrain, or resume from an older copy")
    return ckpt


def check_same_config(saved: dict, current: dict, what: str, path) -> None:
    """Raise CheckpointError naming every field where a checkpoint's config differs from the one asked for."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
             for k in sorted(set(saved) | set(current)) if _plain(saved.get(k)) != _plain(current.get(k))]
    if diffs:
        raise CheckpointError(f"{path} was made with a different {what} config ({'; '.join(diffs)}). Resume with the "
                              f"same settings, or start a new run directory.")


def _plain(value):
    """Tuples and lists compare equal (a config saved as a tuple may come back as a list)."""
    return list(value) if isinstance(value, tuple) else value
