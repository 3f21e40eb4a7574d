"""Images that go into the model: uploads (checked before they are decoded) and the built-in samples."""
from __future__ import annotations

import io

import numpy as np
import skimage.data
import streamlit as st
from PIL import Image, UnidentifiedImageError

from app.loaders import LoadedModel
from varlite.data import CIFAR10, find_cifar10
from varlite.data.cifar10 import CLASSES as CIFAR10_CLASSES
from varlite.data.shapes import CLASS_NAMES as SHAPE_NAMES, Shapes

MAX_UPLOAD_MB = 10
MAX_IMAGE_PIXELS = 40_000_000      # refuse decompression bombs before decoding them
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")     # scikit-image's sample photos (shipped in its wheel)


class ImageInputError(ValueError):
    """An uploaded file that is not a usable image (with a message that says why)."""


def read_image_bytes(data: bytes, name: str = "upload") -> Image.Image:
    """bytes -> PIL image, refusing non-images, oversized files and decompression bombs with a clear message."""
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise ImageInputError(f"{name} is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB. "
                              f"Resize it first (the model only sees a small square anyway).")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageInputError(f"{name} is {img.width}x{img.height} pixels; the limit is "
                                  f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.")
        img.load()
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as err:
        raise ImageInputError(f"{name} is not an image this app can read (PNG, JPEG, BMP, GIF, WebP...); "
                              f"it could not be decoded ({type(err).__name__}).") from None
    return img


def fit_note(model: LoadedModel) -> str:
    """What happens to an uploaded image before the tokenizer sees it (said before the upload, not only after)."""
    size = model.image_size
    return (f"it will be converted to RGB, centre-cropped to a square and resized to {size}x{size} (the model's "
            f"size)")


def _cifar10_available() -> bool:
    try:
        find_cifar10()
        return True
    except Exception:       # noqa: BLE001 -- not downloaded (or unreadable): the photos remain
        return False


def sample_names(model: LoadedModel) -> list[str]:
    """Built-in samples for the Encode/Edit pages: dataset images for small models, scikit-image photos for all."""
    names = []
    if model.image_size <= 64:
        names += [f"shapes: {c}" for c in SHAPE_NAMES]
    if model.class_names == tuple(CIFAR10_CLASSES) and _cifar10_available():     # built-in or own CIFAR-10 model
        names += [f"cifar10 test image {i}" for i in range(10)]
    return names + [f"photo: {n}" for n in PHOTOS]


@st.cache_data(show_spinner=False, max_entries=64)
def sample_image_png(sample: str, size: int) -> bytes:
    """A built-in sample as PNG bytes (the same path as an upload afterwards). At most 64 kept."""
    kind, _, what = sample.partition(": ")
    if kind == "shapes":
        label = list(SHAPE_NAMES).index(what)
        arr = Shapes(n=label + 1, image_size=size, split="test").images_u8[label].permute(1, 2, 0).numpy()
    elif sample.startswith("cifar10 test image"):
        arr = CIFAR10(split="test").images_u8[int(sample.rsplit(" ", 1)[1])].permute(1, 2, 0).numpy()
    elif kind == "photo" and what in PHOTOS:
        arr = getattr(skimage.data, what)()
    else:
        raise ValueError(f"unknown sample {sample!r}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()
