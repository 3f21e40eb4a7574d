"""What every varlite dataset shares: uint8 images in memory, int64 labels, class names (``ImageDataset``), the
mapping of pixels to [-1, 1] (``to_pm1``), and the dataset errors."""
from __future__ import annotations

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


def images_at(dataset, idx_b: torch.Tensor, device, hflip_generator: torch.Generator | None = None) -> torch.Tensor:
    """The float [-1, 1] images of ``dataset`` at ``idx_b``; flipped left-right at random when a generator is given."""
    img = to_pm1(dataset.images_u8[idx_b.cpu()])
    if hflip_generator is not None:
        flip_b = torch.rand(len(img), generator=hflip_generator) < 0.5
        img = torch.where(flip_b.view(-1, 1, 1, 1), img.flip(-1), img)
    return img.to(device)


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
