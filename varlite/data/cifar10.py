"""CIFAR-10 from the official "python version" files (the tarball or its extracted folder), read with a safe unpickler.

The tarball ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``
(train, 10,000 images each), ``test_batch`` (10,000) and ``batches.meta``. Each batch is a pickled dict:
``b'data'`` a numpy uint8 array N x 3072 (the red, green and blue 32 x 32 planes, each row-major), ``b'labels'``
a list of N ints in 0..9, ``b'filenames'``, ``b'batch_label'``. ``batches.meta`` holds ``b'label_names'``.

Pickles can run code when loaded, so they are read by an unpickler that can build numpy arrays and nothing else.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .base import CorruptDatasetError, DatasetNotFoundError, ImageDataset
from varlite.download import download_file, varlite_home

try:
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct     # numpy >= 2
except ImportError:
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct      # numpy 1.x

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
TARBALL_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
META_FILE = "batches.meta"
SPLIT_FILES = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
OFFICIAL_COUNTS = {"train": 50_000, "test": 10_000}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]  # label order
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 32

# The only globals a CIFAR-10 pickle needs: what numpy uses to rebuild an ndarray (the module is numpy.core in
# files written by numpy 1.x, numpy._core in files written by numpy 2).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class CIFAR10(ImageDataset):
    """CIFAR-10, one split ("train": 50,000 images, "test": 10,000), 32 x 32 RGB, 10 classes, held in memory.

    Where the data is looked for (the first place that has it wins):
    - ``root`` if given: the tarball itself, or a folder holding the extracted ``cifar-10-batches-py/`` or the
      tarball, or the extracted ``cifar-10-batches-py/`` folder itself;
    - otherwise the folder in ``$VARLITE_CIFAR10`` (if set), then ``varlite_home()/cifar10/``.
    An extracted folder is preferred to a tarball next to it (it is faster to read). The tarball is read as a stream,
    without extracting it to disk.

    The files are validated by structure: every file present, ``data`` uint8 of shape (N, 3072), N labels in 0..9,
    10 class names. ``check_counts=True`` (the default) also requires the official number of images (50,000 /
    10,000); pass ``check_counts=False`` for small files in the official format (test fixtures).
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", *, check_counts: bool = True):
        if split not in SPLIT_FILES:
            raise ValueError(f"CIFAR-10 split must be one of {list(SPLIT_FILES)}, got {split!r}")
        self.split = split
        self.source = find_cifar10(root)
        images_u8, labels, classes = _load_split(self.source, split, check_counts)
        super().__init__(images_u8, labels, classes)


def find_cifar10(root: str | os.PathLike | None = None) -> Path:
    """The CIFAR-10 data to read: the path of the tarball or of the extracted ``cifar-10-batches-py`` folder.

    Looks in ``root`` if given, else in ``$VARLITE_CIFAR10`` (if set) and then ``varlite_home()/cifar10``; raises
    DatasetNotFoundError saying where it looked and how to get the data.
    """
    if root is not None:
        places = [(Path(root).expanduser(), "the root argument")]
    else:
        places = []
        if os.environ.get("VARLITE_CIFAR10"):
            places.append((Path(os.environ["VARLITE_CIFAR10"]).expanduser(), "$VARLITE_CIFAR10"))
        places.append((varlite_home() / "cifar10", "varlite_home()/cifar10"))
    for place, _ in places:
        if place.is_file():
            return place
        if (place / FOLDER_NAME).is_dir():
            return place / FOLDER_NAME
        if (place / TARBALL_NAME).is_file():
            return place / TARBALL_NAME
        if (place / META_FILE).is_file():
            return place
    looked = "\n".join(f"  - {place} ({why})" for place, why in places)
    raise DatasetNotFoundError(
        f"CIFAR-10 not found. Looked for {TARBALL_NAME} or an extracted {FOLDER_NAME}/ folder in:\n{looked}\n"
        f"Put the official {TARBALL_NAME} (or its extracted {FOLDER_NAME}/) in {places[-1][0]}, pass "
        f"root=<path>, or set VARLITE_CIFAR10=<folder>. To download it (170 MB): run "
        f"`python -m varlite download cifar10`, or in Python `from varlite.data import download_cifar10; "
        f"download_cifar10()`.")


def download_cifar10(root: str | os.PathLike | None = None, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5,
                     progress: bool = True) -> Path:
    """Download the CIFAR-10 tarball to ``root/cifar-10-python.tar.gz`` (default root: ``varlite_home()/cifar10``),
    check its md5, and return its path. Nothing is fetched if a file with the right md5 is already there."""
    folder = Path(root).expanduser() if root is not None else varlite_home() / "cifar10"
    return download_file(url, folder / TARBALL_NAME, md5=md5, progress=progress)


def _load_split(source: Path, split: str, check_counts: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read and validate one split: (images_u8 N x 3 x 32 x 32, labels int64 N, class names)."""
    names = [META_FILE, *SPLIT_FILES[split]]
    contents = _read_tarball(source, names) if source.is_file() else _read_folder(source, names)
    classes = _check_meta(contents[META_FILE], _where(source, META_FILE))
    data_parts, label_parts = [], []
    for name in SPLIT_FILES[split]:
        data_NX, labels_N = _check_batch(contents[name], _where(source, name))
        data_parts.append(data_NX)
        label_parts.append(labels_N)
    data_NX = np.concatenate(data_parts)                  # a fresh, writable copy
    labels_N = np.concatenate(label_parts).astype(np.int64)
    if check_counts and len(data_NX) != OFFICIAL_COUNTS[split]:
        raise CorruptDatasetError(
            f"{source}: the {split} split has {len(data_NX)} images, the official CIFAR-10 has "
            f"{OFFICIAL_COUNTS[split]}. The files are incomplete or not CIFAR-10; download the official tarball "
            f"again (or pass check_counts=False for a deliberately small copy in the official format).")
    images_u8 = torch.from_numpy(data_NX.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))   # 3072 = 3 planes x 32 x 32
    return images_u8, torch.from_numpy(labels_N), classes


def _read_tarball(path: Path, names: list[str]) -> dict[str, object]:
    """Unpickle the members ``cifar-10-batches-py/<name>`` of a tarball, reading it once as a stream."""
    wanted = {f"{FOLDER_NAME}/{name}": name for name in names}
    contents = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or not member.isfile():
                    continue
                raw = tar.extractfile(member).read()     # read first, so a truncated archive is reported as such
                contents[name] = _safe_unpickle(io.BytesIO(raw), _where(path, name))
                if len(contents) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise CorruptDatasetError(f"{path} cannot be read as a .tar.gz archive ({type(err).__name__}: {err}); it is "
                                  f"probably truncated or damaged. Delete it and download it again.") from err
    missing = [name for name in names if name not in contents]
    if missing:
        raise CorruptDatasetError(f"{path} has no member {FOLDER_NAME}/{missing[0]}; a CIFAR-10 tarball holds "
                                  f"{FOLDER_NAME}/ with {META_FILE}, data_batch_1..5 and test_batch. Delete it and "
                                  f"download the official tarball again.")
    return contents


def _read_folder(folder: Path, names: list[str]) -> dict[str, object]:
    """Unpickle the files ``folder/<name>`` of an extracted ``cifar-10-batches-py`` folder."""
    contents = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise CorruptDatasetError(f"{path} is missing: the extracted CIFAR-10 folder {folder} is incomplete. It "
                                      f"needs {META_FILE}, data_batch_1..5 and test_batch; extract the official "
                                      f"tarball again.")
        with open(path, "rb") as f:
            contents[name] = _safe_unpickle(f, str(path))
    return contents


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, numbers and numpy arrays, and refuses every other global.

    A pickle runs code by naming a global (a function such as ``os.system``) and calling it; ``find_class`` is where
    every such name is resolved, so allowing only numpy's array-rebuilding functions means nothing else can run.
    """

    def __init__(self, file: BinaryIO, where: str):
        super().__init__(file, encoding="bytes")        # the files were written by Python 2: keep str as bytes
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise CorruptDatasetError(
                f"{self.where} asks to load {module}.{name}, which is refused: CIFAR-10 files hold only dicts, lists, "
                f"bytes, ints and numpy arrays. This is not a genuine CIFAR-10 file (it may be malicious; nothing from "
                f"it was run). Delete it and download the official tarball again.")
        return _ALLOWED_GLOBALS[(module, name)]


def _safe_unpickle(file: BinaryIO, where: str) -> object:
    """Unpickle with _NumpyOnlyUnpickler; any failure becomes a CorruptDatasetError naming ``where``."""
    try:
        return _NumpyOnlyUnpickler(file, where).load()
    except CorruptDatasetError:
        raise
    except Exception as err:            # a damaged pickle can fail in many ways; all mean the same to the user
        raise CorruptDatasetError(f"{where} is not a readable CIFAR-10 pickle ({type(err).__name__}: {err}). "
                                  f"Delete it and download the official tarball again.") from err


def _check_meta(meta: object, where: str) -> list[str]:
    """The 10 class names of ``batches.meta`` (the official file holds CLASSES)."""
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != NUM_CLASSES or not all(isinstance(n, bytes) for n in names):
        raise CorruptDatasetError(f"{where} must be a dict whose b'label_names' is a list of {NUM_CLASSES} byte "
                                  f"strings; got {_describe(names)}. Download the official tarball again.")
    return [n.decode("ascii") for n in names]


def _check_batch(batch: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 N x 3072, labels N)`` of one batch, after checking its structure."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise CorruptDatasetError(f"{where} must be a dict with keys b'data' and b'labels'; got "
                                  f"{_describe(batch)}. Download the official tarball again.")
    data_NX = batch[b"data"]
    if not (isinstance(data_NX, np.ndarray) and data_NX.dtype == np.uint8 and data_NX.ndim == 2
            and data_NX.shape[1] == 3 * IMAGE_SIZE * IMAGE_SIZE):
        raise CorruptDatasetError(f"{where}: b'data' must be a numpy uint8 array of shape (N, 3072); got "
                                  f"{_describe(data_NX)}. Download the official tarball again.")
    labels_N = np.asarray(batch[b"labels"])
    if labels_N.shape != (len(data_NX),) or labels_N.dtype.kind not in "iu":
        raise CorruptDatasetError(f"{where}: b'labels' must be {len(data_NX)} integers (one per image); got "
                                  f"{_describe(labels_N)}. Download the official tarball again.")
    out_of_range = np.flatnonzero((labels_N < 0) | (labels_N >= NUM_CLASSES))
    if len(out_of_range):
        i = out_of_range[0]
        raise CorruptDatasetError(f"{where}: label {labels_N[i]} of image {i} is out of range 0..{NUM_CLASSES - 1}. "
                                  f"Download the official tarball again.")
    return data_NX, labels_N


def _where(source: Path, name: str) -> str:
    """How to name file ``name`` of the data in messages."""
    return f"{source}:{FOLDER_NAME}/{name}" if source.is_file() else str(source / name)


def _describe(value: object) -> str:
    """A short description of a value for error messages: type, and dtype/shape or length."""
    if isinstance(value, np.ndarray):
        return f"a numpy {value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"
