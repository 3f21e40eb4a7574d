"""Reading untrusted PyTorch files safely: ``torch.load(weights_only=True)`` behind a look at the file's first bytes,
and the one family of errors every varlite loader raises (``CheckpointError`` and its kinds).

Below everything that loads a file (training checkpoints, official weights, built-in models); imports nothing else of
varlite.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A file cannot be loaded as what was asked for: missing, damaged, of the wrong kind, or made for a different
    model config; the message says why and what to do. The one checkpoint error of varlite: training checkpoints
    (here) and official / state_dict files (``varlite.pretrained``, whose specific errors derive from it)."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks to import or call Python objects; it was refused without running anything."""


class CorruptCheckpointError(CheckpointError):
    """Truncated or damaged file (or not a PyTorch file at all)."""


ZIP_MAGIC = b"PK\x03\x04"        # torch.save's format is a zip archive; each member starts with this
PICKLE_PROTOCOL_OPCODE = b"\x80"  # legacy torch.save files are pickles, which start with the PROTO opcode
# phrases of torch's weights-only unpickler when a pickle asks to import or call something (not mere damage)
REFUSAL_PHRASES = ("GLOBAL ", "call reduce for unrecognized function", "create new object", "Can only build")


def checkpoint_file_kind(path: str | os.PathLike) -> str:
    """What a file looks like from its first bytes and its zip directory (nothing is unpickled):

    "zip" (torch.save's format, complete), "damaged zip" (starts like a zip archive but its central directory,
    written last, is missing or broken: a truncated download or copy), "legacy pickle" (torch.save with
    ``_use_new_zipfile_serialization=False``), "empty", or "other".
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty"
    if zipfile.is_zipfile(path):
        return "zip"
    if head == ZIP_MAGIC:
        return "damaged zip"
    if head[:1] == PICKLE_PROTOCOL_OPCODE:
        return "legacy pickle"
    return "other"


def check_stored_members(path: Path, remedy: str) -> None:
    """Refuse a zip whose members are compressed: ``torch.save`` stores every member as is, so the bytes a file can
    put in memory are at most its size on disk. A compressed member is not something torch.save wrote, and could
    inflate to gigabytes from a small file (a "zip bomb"); it is refused before anything is inflated."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    compressed = [m for m in members if m.compress_type != zipfile.ZIP_STORED]
    if compressed or sum(m.file_size for m in members) > path.stat().st_size:
        raise CorruptCheckpointError(f"{path} is a zip archive with compressed members ({len(compressed)} of "
                                     f"{len(members)}), which torch.save never writes: it was refused before "
                                     f"inflating anything (it could expand far beyond its size); {remedy}")


def read_torch_file(path: Path, remedy: str, mmap: bool = False, unsafe_hint: str = "") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` of an existing file; every failure raises
    ``CorruptCheckpointError`` ("<path> <what the file is>; <remedy>") or ``UnsafeCheckpointError``. The one reader
    of every varlite loader (training checkpoints, official and uploaded weights): a zip file is read only when its
    members are stored uncompressed (``check_stored_members``), so reading never takes more memory than the file.

    Messages describe the kind of file, never its bytes (a path may name any file a user can type). Any exception
    of the unpickler on damaged data (IndexError, KeyError, EOFError, UnicodeDecodeError, ...) is the same damaged
    file error; only a pickle that asks to import or call something is unsafe. ``mmap``: map a zip file's tensors
    instead of reading them into memory.
    """
    kind = checkpoint_file_kind(path)
    if kind == "zip":
        check_stored_members(path, remedy)
    if kind == "empty":
        raise CorruptCheckpointError(f"{path} is empty (0 bytes); {remedy}")
    if kind == "damaged zip":
        raise CorruptCheckpointError(f"{path} is a zip archive that is truncated or damaged (its table of contents, "
                                     f"written at the end, is missing), e.g. a download or copy that stopped "
                                     f"early; {remedy}")
    if kind == "other":
        raise CorruptCheckpointError(f"{path} is not a PyTorch checkpoint: it is neither a zip archive (what "
                                     f"torch.save writes) nor a legacy torch pickle; {remedy}")
    try:
        with warnings.catch_warnings():     # torch warns about odd pickle protocols, quoting bytes of the file
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and kind == "zip")
    except Exception as err:     # noqa: BLE001 -- damaged data makes the unpickler fail in many ways; see above
        if isinstance(err, pickle.UnpicklingError) and any(p in str(err) for p in REFUSAL_PHRASES):
            raise UnsafeCheckpointError(
                f"refused to load {path}: it asks to import or call Python objects, which could run code "
                f"(nothing was executed). Only plain tensors, numbers, strings, lists and dicts are accepted"
                + (f"; {unsafe_hint}" if unsafe_hint else "")) from None
        what = "zip archive" if kind == "zip" else "legacy torch pickle"
        raise CorruptCheckpointError(f"{path} is a damaged {what}: its contents cannot be read "
                                     f"({type(err).__name__}); {remedy}") from None


# buffers whose infinite entries are their definition, not damage: VAR's block-causal mask (0 or -inf)
DEFINED_INFINITE = ("attn_bias_for_masking",)


def check_finite(module: torch.nn.Module, what: str) -> None:
    """Refuse weights holding NaN or infinite values, naming the first such tensor (a NaN weight loads, then fails
    deep inside a generation or draws noise). The -inf entries of ``DEFINED_INFINITE`` buffers are not checked."""
    for name, tensor in module.state_dict().items():
        if name in DEFINED_INFINITE or not tensor.is_floating_point() or bool(tensor.isfinite().all()):
            continue
        bad = int((~tensor.isfinite()).sum())
        raise CheckpointError(f"{what}: the tensor `{name}` holds {bad:,} NaN or infinite values (of "
                              f"{tensor.numel():,}): the weights are damaged, or the training diverged. Use an "
                              f"earlier checkpoint, or train again (e.g. with a lower learning rate).")
