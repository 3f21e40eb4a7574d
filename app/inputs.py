"""Images that go into the model: uploads (checked before they are decoded, decoded once per upload) and the built-in
samples (the model's own dataset first)."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import skimage.data
import streamlit as st
import torch
from PIL import Image, UnidentifiedImageError

from app.loaders import LoadedModel
from app.uploads import literal
from varlite.data import CIFAR10, find_cifar10
from varlite.data.cifar10 import CLASSES as CIFAR10_CLASSES
from varlite.data.shapes import CLASS_NAMES as SHAPE_NAMES, Shapes
from varlite.images import prepare_image

MAX_UPLOAD_MB = 10
MAX_IMAGE_PIXELS = 40_000_000      # refuse decompression bombs before decoding them
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")     # scikit-image's sample photos (shipped in its wheel)


class ImageInputError(ValueError):
    """An uploaded file that is not a usable image (with a message that says why)."""


def read_image_bytes(data: bytes, name: str = "upload") -> Image.Image:
    """bytes -> PIL image, refusing non-images, oversized files and decompression bombs with a clear message."""
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise ImageInputError(f"{literal(name)} is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB. "
                              f"Resize it first (the model only sees a small square anyway).")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageInputError(f"{literal(name)} is {img.width}x{img.height} pixels; the limit is "
                                  f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.")
        img.load()
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as err:
        raise ImageInputError(f"{literal(name)} is not an image this app can read (PNG, JPEG, BMP, GIF, WebP...); "
                              f"it could not be decoded ({type(err).__name__}).") from None
    return img


@dataclass(frozen=True)
class ModelImage:
    """An image as the model sees it: (S, S, 3) uint8 after ``varlite.images.prepare_image`` (RGB, centre square,
    resized), and the notes of what was changed."""
    u8_HW3: np.ndarray
    notes: tuple[str, ...]

    def tensor(self):
        """(1, 3, S, S) in [-1, 1]: the tokenizer's input (the same values as prepare_image of the original)."""
        return prepare_image(self.u8_HW3, self.u8_HW3.shape[0])[0]


def model_image(data: bytes, name: str, size: int) -> ModelImage:
    """The upload ``data`` checked (``read_image_bytes``), decoded and fitted to ``size`` once per upload and size:
    cached under the SHA-256 of the bytes, so a rerun of the page (every click) costs a hash, not a decode (a
    40-megapixel PNG takes seconds to decode)."""
    return _model_image(hashlib.sha256(data).hexdigest(), size, name, data)


@st.cache_data(show_spinner="Reading the image...", max_entries=16, ttl=3600)
def _model_image(sha256: str, size: int, name: str, _data: bytes) -> ModelImage:
    """(``_data`` is not hashed by the cache: ``sha256`` names it.)"""
    x_13SS, notes = prepare_image(read_image_bytes(_data, name), size)
    u8_3SS = x_13SS[0].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)     # exactly prepare_image's pixels
    return ModelImage(u8_3SS.permute(1, 2, 0).numpy(), tuple(notes))


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
    """Built-in samples for the Encode/Edit pages, the model's own dataset first (the pages open on the first):
    Shapes images for a Shapes model, CIFAR-10 test images for a CIFAR-10 model (when the data is on this machine),
    then scikit-image photos for all, then Shapes images for any other small model."""
    shapes = [f"shapes: {c}" for c in SHAPE_NAMES] if model.image_size <= 64 else []
    photos = [f"photo: {n}" for n in PHOTOS]
    if model.class_names == tuple(SHAPE_NAMES):
        return shapes + photos
    if model.class_names == tuple(CIFAR10_CLASSES):           # built-in or own CIFAR-10 model
        cifar = [f"cifar10 test image {i}" for i in range(10)] if _cifar10_available() else []
        return cifar + photos + shapes
    return photos + shapes


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
