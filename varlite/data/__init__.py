"""Datasets (CIFAR-10, the synthetic Shapes, users' image folders) sharing one interface, and their errors.

Every dataset keeps its images in memory as ``images_u8`` (uint8, N x 3 x H x W) with ``labels`` (int64, N) and
``classes`` (names), and ``dataset[i]`` returns ``(img_3HW, label)`` with the image mapped to [-1, 1] by ``to_pm1``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset


class DatasetError(RuntimeError):
    """A dataset could not be loaded (base class of the errors below)."""


class DatasetNotFoundError(DatasetError):
    """The dataset's files are not in any of the places looked at."""


class CorruptDatasetError(DatasetError):
    """The dataset's files exist but are incomplete, damaged, or not in the expected format."""


def to_pm1(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) in [0, 255] -> float32 in [-1, 1]: x = u8 / 255, then x + x - 1.

    Written exactly as the official VAR code normalises (``x.add(x).add_(-1)``), so values match it bit for bit.
    """
    if images_u8.dtype != torch.uint8:
        raise TypeError(f"to_pm1 expects a uint8 tensor of pixel values 0..255, got dtype {images_u8.dtype}; "
                        f"convert with .to(torch.uint8) first, or skip to_pm1 if the images are already in [-1, 1]")
    x = images_u8.float().div(255)
    return x.add(x).add_(-1)


class ImageDataset(Dataset):
    """The interface of every varlite dataset: uint8 images in memory, int64 labels, class names.

    ``dataset[i]`` is ``(img_3HW, label)``: the float32 image in [-1, 1] (``to_pm1``) and the label as an int.
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, classes: list[str]):
        if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[1] != 3:
            raise ValueError(f"images_u8 must be a uint8 tensor N x 3 x H x W, got {images_u8.dtype} "
                             f"{tuple(images_u8.shape)}")
        if labels.shape != (len(images_u8),):
            raise ValueError(f"labels must have shape ({len(images_u8)},) like the images, got {tuple(labels.shape)}")
        self.images_u8 = images_u8
        self.labels = labels.to(torch.int64)
        self.classes = list(classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Side of the square images in pixels."""
        return self.images_u8.shape[-1]

    def __len__(self) -> int:
        return len(self.images_u8)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_pm1(self.images_u8[i]), int(self.labels[i])


# The dataset modules import the errors and ImageDataset defined above, so they are imported last.
from varlite.data.cifar10 import CIFAR10, download_cifar10, find_cifar10  # noqa: E402
from varlite.data.folder import ImageFolder  # noqa: E402
from varlite.data.shapes import Shapes  # noqa: E402
from varlite.data import cifar10, shapes  # noqa: E402  (their class names)

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
