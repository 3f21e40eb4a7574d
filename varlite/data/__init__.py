"""Datasets (CIFAR-10, the synthetic Shapes, users' image folders) sharing one interface, and their errors.

Every dataset keeps its images in memory as ``images_u8`` (uint8, N x 3 x H x W) with ``labels`` (int64, N) and
``classes`` (names), and ``dataset[i]`` returns ``(img_3HW, label)`` with the image mapped to [-1, 1] by ``to_pm1``.
"""
from __future__ import annotations

from pathlib import Path

from .. import imagenet
from . import cifar10, shapes
from .base import CorruptDatasetError, DatasetError, DatasetNotFoundError, ImageDataset, images_at, to_pm1  # noqa: F401
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


def folder_class_names(data_root: str | Path) -> list[str] | None:
    """The class names of a ``folder`` dataset, by ``ImageFolder``'s rule without reading any image: the sorted
    names of the non-hidden sub-folders of ``<data_root>/train`` (or of ``data_root`` when it has no train/);
    None when the folder is not there."""
    root = Path(data_root).expanduser()
    split = root / "train" if (root / "train").is_dir() else root
    if not split.is_dir():
        return None
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_names_for(dataset: str | None, num_classes: int, data_root: str | Path | None = None) -> list[str]:
    """A dataset's names (shapes, cifar10; a built-in model is named after its dataset; a ``folder`` dataset's
    from its sub-folders when ``data_root`` is given and still there), ImageNet names for 1,000 classes, else
    blanks."""
    names = class_names(dataset) if dataset in DATASET_NAMES else None
    if names is None and dataset == "folder" and data_root:
        names = folder_class_names(data_root)
    if names is None and num_classes == imagenet.NUM_CLASSES:
        names = imagenet.class_names()
    return list(names) if names is not None and len(names) == num_classes else [""] * num_classes


__all__ = ["DatasetError", "DatasetNotFoundError", "CorruptDatasetError", "to_pm1", "ImageDataset", "CIFAR10",
           "download_cifar10", "find_cifar10", "ImageFolder", "Shapes", "DATASET_NAMES", "load_dataset", "class_names",
           "class_names_for", "folder_class_names"]
