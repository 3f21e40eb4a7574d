"""Getting user images into the tokenizer's format: RGB, square, the model's size, float in [-1, 1]."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def prepare_image(image, size: int) -> tuple[torch.Tensor, list[str]]:
    """A PIL image or HxW[xC] uint8 array -> ((1, 3, size, size) float in [-1, 1], notes on what was changed).

    Grayscale / RGBA / palette images are converted to RGB (alpha composited on white), non-square images are
    centre-cropped to a square, and the square is resized to ``size`` (bicubic). Each change is listed in the notes.
    """
    notes = []
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array (values 0..255); got dtype {image.dtype}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 numpy array; got {type(image).__name__}")
    if image.mode != "RGB":
        notes.append(f"converted from {image.mode} to RGB")
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
    w, h = image.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        image = image.crop((left, top, left + s, top + s))
        notes.append(f"centre-cropped from {w}x{h} to {s}x{s}")
    if image.size != (size, size):
        notes.append(f"resized from {image.size[0]}x{image.size[1]} to {size}x{size}")
        image = image.resize((size, size), Image.BICUBIC)
    u8_HW3 = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    x = u8_HW3.permute(2, 0, 1).unsqueeze(0).float().div(255)
    return x.add(x).add_(-1), notes
