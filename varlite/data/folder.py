"""ImageFolder: users' own images, one sub-folder per class, centre-cropped to squares and resized."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .base import CorruptDatasetError, DatasetError, DatasetNotFoundError, ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder(ImageDataset):
    """Images in ``root/<class name>/<file>``, loaded into memory as image_size x image_size RGB.

    Rules:
    - classes are the sorted names of the sub-folders of ``root``; a class's label is its index in that list;
    - images are the files directly inside a class folder whose extension is in IMAGE_EXTENSIONS (any case),
      sorted by name; names starting with "." are ignored (hidden files and folders);
    - any other file (README.txt, notes.csv, ...) is skipped, with one UserWarning naming the skipped files;
    - a file with an image extension that cannot be read raises CorruptDatasetError naming it;
    - each image is turned upright by its EXIF orientation, converted to RGB (transparent pixels are put on
      white), centre-cropped to a square of its shorter side, and resized to image_size with bicubic filtering.
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 32):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"image folder {self.root} does not exist or is not a folder; pass the folder "
                                       f"that holds one sub-folder of images per class")
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DatasetError(f"{self.root} has no class sub-folders. Expected {self.root}/<class name>/<images>, "
                               f"e.g. {self.root}/cats/1.png; with a single class, move the images into one "
                               f"sub-folder such as {self.root}/all/")
        images_HW3, labels, skipped = [], [], []
        for label, class_dir in enumerate(class_dirs):
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
            image_files = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
            skipped += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
            if not image_files:
                raise DatasetError(f"class folder {class_dir} holds no images (files ending in "
                                   f"{', '.join(IMAGE_EXTENSIONS)}); add images to it or remove it")
            for path in image_files:
                images_HW3.append(load_square_rgb(path, image_size))
                labels.append(label)
        if skipped:
            shown = ", ".join(str(p) for p in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            warnings.warn(f"ImageFolder skipped {len(skipped)} file(s) that are not images (by extension): "
                          f"{shown}{more}", stacklevel=2)
        images_u8 = torch.from_numpy(np.stack(images_HW3)).permute(0, 3, 1, 2).contiguous()     # N x 3 x H x W
        super().__init__(images_u8, torch.tensor(labels, dtype=torch.int64), [d.name for d in class_dirs])


MAX_IMAGE_PIXELS = 40_000_000      # a dataset image larger than this is refused before it is decoded


def load_square_rgb(path: Path, image_size: int) -> np.ndarray:
    """One image file as a uint8 array image_size x image_size x 3 (upright, RGB on white, centre crop, bicubic).

    An image over ``MAX_IMAGE_PIXELS`` is refused from its header, before decoding (a "decompression bomb": a small
    file that would decode to gigabytes)."""
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise CorruptDatasetError(f"{path} is {img.width}x{img.height} pixels, more than the "
                                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels an image folder accepts; shrink "
                                          f"it or remove it")
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            rgb = img.convert("RGB")
    except Image.DecompressionBombError:        # PIL's own limit, met before ours in Image.open
        raise CorruptDatasetError(f"{path} has more than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels an image folder "
                                  f"accepts (refused before decoding); shrink it or remove it") from None
    except (OSError, SyntaxError, ValueError) as err:     # what PIL raises for unreadable or damaged files
        raise CorruptDatasetError(f"{path} is not a readable image: its name ends in {path.suffix} but the "
                                  f"contents cannot be decoded as one ({type(err).__name__}); replace or remove "
                                  f"it") from err
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    if side != image_size:
        square = square.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8)
