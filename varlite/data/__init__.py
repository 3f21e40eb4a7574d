"""Datasets (CIFAR-10, the synthetic Shapes, users' image folders) sharing one interface, and their errors.

Every dataset keeps its images in memory as ``images_u8`` (uint8, N x 3 x H x W) with ``labels`` (int64, N) and
``classes`` (names), and ``dataset[i]`` returns ``(img_3HW, label)`` with the image mapped to [-1, 1] by ``to_pm1``.
"""
from __future__ import annotations

from pathlib import Path

from . import cifar10, shapes
from .base import CorruptDatasetError, DatasetError, DatasetNotFoundError, ImageDataset, to_pm1  # noqa: F401
from .cifar10 import CIFAR10, download_cifar10, find_cifar10  # noqa: F401
from .folder import ImageFolder
from .shapes import Shapes

DATASET_NAMES = ("shapes", "cifar10", "folder")


def load_dataset(name: str, split: str = "train", root=None, **kw) -> ImageDataset:
    """Build a dataset by name: "shapes" -> Shapes, "cifar10" -> CIFAR10, "folder" -> ImageFolder.

    ``kw`` goes to the class. Shapes is generated, so it takes no ``root``. For "folder", ``root`` is required and
    ``root/<split>`` is used when that sub-folder exists (the usual ``train/``, ``test/`` layout); otherwise ``root``
    itself is used for every split.
    """
    if name == "shapes":
        if root is not None:
            raise ValueError(f"the shapes dataset is generated in memory and takes no root (got root={root!r}); "
                             f"leave root out")
        return Shapes(split=split, **kw)
    if name == "cifar10":
        return CIFAR10(root=root, split=split, **kw)
    if name == "folder":
        if root is None:
            raise ValueError("the folder dataset needs the folder of your images (--data-root DIR on the command "
                             "line, root=DIR in Python), holding one sub-folder of images per class")
        split_folder = Path(root) / split
        return ImageFolder(split_folder if split_folder.is_dir() else root, **kw)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def class_names(name: str) -> list[str] | None:
    """The class names of a dataset by name, in label order: "shapes" and "cifar10" have fixed ones; a "folder"
    dataset's come from its sub-folders (``ImageFolder(...).classes``), so this returns None for it."""
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return {"shapes": list(shapes.CLASS_NAMES), "cifar10": list(cifar10.CLASSES)}.get(name)


__all__ = ["DatasetError", "DatasetNotFoundError", "CorruptDatasetError", "to_pm1", "ImageDataset", "CIFAR10",
           "download_cifar10", "find_cifar10", "ImageFolder", "Shapes", "DATASET_NAMES", "load_dataset", "class_names"]
