"""Shapes: the built-in synthetic dataset, 10 classes of coloured shapes whose class is visible at coarse scales.

Design (what next-scale prediction should show): the class fixes everything that survives heavy downsampling, and
every image draws its own fine detail.

Coarse (fixed by the class; visible at 2 x 2 to 4 x 4): the kind of shape, its colour, and where it sits.

    label  name                   shape                                  colour    place
    0      red disc               disc                                   red       top left
    1      green square           square                                 green     top right
    2      blue triangle          triangle, apex up                      blue      bottom left
    3      yellow ring            ring (annulus)                         yellow    bottom right
    4      cyan diamond           diamond                                cyan      centre
    5      magenta cross          plus sign                              magenta   centre
    6      orange horizontal bar  band across the whole width            orange    middle row
    7      white vertical bar     band across the whole height           white     middle column
    8      pink lower half        the lower part of the image, wavy top  pink      bottom
    9      teal frame             a border along the four edges          teal      edges

Fine (random per image): position jitter (about +-2.5 px at 32 x 32), size +-15%, colour +-25 levels per channel,
stripes inside the shape (random angle, period about 4.5 to 8 px at 32 x 32, +-25% brightness), the wave on the
edge of the pink half, a dark grey background of random level and tint, and pixel noise (std 6 levels).

Shapes are drawn in coordinates where the image spans [0, 1], with edges anti-aliased over one pixel, so any
``image_size`` gives the same picture. Image ``i`` has label ``i % 10`` (the classes are balanced; shuffle with a
DataLoader). All randomness comes from one numpy generator seeded by (seed, split), so the data is deterministic and
the train and test splits differ. Images are drawn with numpy in chunks of 1,000 (to bound memory).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .base import ImageDataset


class ShapeClass(NamedTuple):
    """What a class fixes. Lengths are in image widths (the image spans [0, 1]; y grows downwards)."""
    name: str
    kind: str                           # which signed-distance rule draws it (see _signed_distance)
    rgb: tuple[int, int, int]
    centre: tuple[float, float]         # (x, y) before the per-image jitter
    size: float                         # radius / half-side / half-width, before the per-image scaling


SHAPE_CLASSES = (
    ShapeClass("red disc", "disc", (220, 50, 40), (0.32, 0.32), 0.17),
    ShapeClass("green square", "square", (50, 190, 70), (0.68, 0.32), 0.15),
    ShapeClass("blue triangle", "triangle", (60, 90, 230), (0.32, 0.68), 0.19),
    ShapeClass("yellow ring", "ring", (235, 210, 50), (0.68, 0.68), 0.17),
    ShapeClass("cyan diamond", "diamond", (60, 210, 225), (0.50, 0.50), 0.22),
    ShapeClass("magenta cross", "cross", (210, 60, 200), (0.50, 0.50), 0.25),
    ShapeClass("orange horizontal bar", "horizontal bar", (245, 140, 40), (0.50, 0.50), 0.11),
    ShapeClass("white vertical bar", "vertical bar", (235, 235, 235), (0.50, 0.50), 0.11),
    ShapeClass("pink lower half", "lower half", (245, 150, 190), (0.50, 0.62), 0.04),
    ShapeClass("teal frame", "frame", (30, 140, 140), (0.50, 0.50), 0.14),
)
CLASS_NAMES = [c.name for c in SHAPE_CLASSES]
SPLITS = ("train", "test")
DEFAULT_N = {"train": 10_000, "test": 1_000}
CHUNK = 1_000


class Shapes(ImageDataset):
    """The synthetic Shapes dataset (see the module docstring): ``n`` RGB images of ``image_size`` pixels.

    ``n`` defaults to 10,000 for "train" and 1,000 for "test". The same (n, seed, image_size, split) always gives
    the same images; "train" and "test" are drawn from different seeds.
    """

    def __init__(self, n: int | None = None, seed: int = 0, image_size: int = 32, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"Shapes split must be one of {list(SPLITS)}, got {split!r}")
        n = DEFAULT_N[split] if n is None else n
        if n < 1 or image_size < 1:
            raise ValueError(f"Shapes needs n >= 1 and image_size >= 1, got n={n}, image_size={image_size}")
        labels_N = np.arange(n) % len(SHAPE_CLASSES)
        rng = np.random.default_rng([seed, SPLITS.index(split)])          # one stream per (seed, split)
        chunks = [render_shapes(labels_N[first:first + CHUNK], image_size, rng) for first in range(0, n, CHUNK)]
        super().__init__(torch.from_numpy(np.concatenate(chunks)), torch.from_numpy(labels_N), CLASS_NAMES)
        self.seed = seed
        self.split = split


def render_shapes(labels_B: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one image per label (uint8, B x 3 x image_size x image_size); all randomness comes from ``rng``.

    Plain numpy (single-threaded), so drawing stays fast on a CPU that is busy with other work.
    """
    B, S = len(labels_B), image_size

    def uniform(low, high, *shape):
        return rng.uniform(low, high, size=(B, *shape)).astype(np.float32)

    shift_B2 = uniform(-0.08, 0.08, 2)
    scale_B = uniform(0.85, 1.15)
    colour_jitter_B3 = uniform(-25, 25, 3)
    stripe_angle_B = uniform(0, math.pi)
    stripe_period_B = uniform(0.14, 0.25)                   # in image widths: 4.5 to 8 px at 32 x 32
    stripe_phase_B = uniform(0, 2 * math.pi)
    background_B = uniform(20, 60)
    tint_B3 = uniform(-8, 8, 3)
    noise_B3HW = 6 * rng.standard_normal((B, 3, S, S), dtype=np.float32)

    centre_B2 = np.array([c.centre for c in SHAPE_CLASSES], np.float32)[labels_B] + shift_B2
    size_B = np.array([c.size for c in SHAPE_CLASSES], np.float32)[labels_B] * scale_B
    colour_B3 = np.array([c.rgb for c in SHAPE_CLASSES], np.float32)[labels_B]

    coords_S = (np.arange(S, dtype=np.float32) + 0.5) / S                 # pixel centres in [0, 1]
    x_BHW = np.broadcast_to(coords_S[None, None, :], (B, S, S))
    y_BHW = np.broadcast_to(coords_S[None, :, None], (B, S, S))
    distance_BHW = np.empty((B, S, S), np.float32)
    for label, shape_class in enumerate(SHAPE_CLASSES):
        rows = labels_B == label
        distance_BHW[rows] = _signed_distance(shape_class.kind, x_BHW[rows], y_BHW[rows],
                                              centre_B2[rows, :, None, None], size_B[rows, None, None],
                                              stripe_phase_B[rows, None, None])
    alpha_BHW = np.clip(0.5 - distance_BHW * S, 0, 1)                     # 1 inside, 0 outside, 1 px soft edge

    along_BHW = x_BHW * np.cos(stripe_angle_B)[:, None, None] + y_BHW * np.sin(stripe_angle_B)[:, None, None]
    stripes_BHW = 1 + 0.25 * np.sin(2 * math.pi * along_BHW / stripe_period_B[:, None, None]
                                     + stripe_phase_B[:, None, None])
    shape_B3HW = (colour_B3 + colour_jitter_B3)[:, :, None, None] * stripes_BHW[:, None]
    background_B311 = (background_B[:, None] + tint_B3)[:, :, None, None]
    img_B3HW = background_B311 + alpha_BHW[:, None] * (shape_B3HW - background_B311) + noise_B3HW
    return np.clip(np.rint(img_B3HW), 0, 255).astype(np.uint8)


def _signed_distance(kind: str, x: np.ndarray, y: np.ndarray, centre: np.ndarray, size: np.ndarray,
                     phase: np.ndarray) -> np.ndarray:
    """Signed distance (in image widths) from each pixel centre to the shape's edge: negative inside, positive out.

    ``x``, ``y`` are pixel coordinates (image spans [0, 1], y grows downwards); ``centre`` holds (x, y) per image.
    """
    dx, dy = x - centre[:, 0], y - centre[:, 1]
    if kind == "disc":
        return np.sqrt(dx ** 2 + dy ** 2) - size
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - size
    if kind == "triangle":                    # apex at dy = -size, base at dy = 0.8 size, base half-width size
        slope = 1 / 1.8                       # half-width gained per unit of height: size over 1.8 size
        side = (np.abs(dx) - (dy + size) * slope) / math.sqrt(1 + slope ** 2)
        return np.maximum(side, dy - 0.8 * size)
    if kind == "ring":
        return np.abs(np.sqrt(dx ** 2 + dy ** 2) - size) - 0.06
    if kind == "diamond":
        return (np.abs(dx) + np.abs(dy) - size) / math.sqrt(2)
    if kind == "cross":                       # two bars of half-width 0.3 size and half-length size
        horizontal = np.maximum(np.abs(dx) - size, np.abs(dy) - 0.3 * size)
        vertical = np.maximum(np.abs(dx) - 0.3 * size, np.abs(dy) - size)
        return np.minimum(horizontal, vertical)
    if kind == "horizontal bar":
        return np.abs(dy) - size
    if kind == "vertical bar":
        return np.abs(dx) - size
    if kind == "lower half":                  # inside below a wavy line of amplitude `size`, 2.5 waves per width
        edge_y = centre[:, 1] + size * np.sin(2 * math.pi * 2.5 * x + phase)
        return edge_y - y
    if kind == "frame":                       # inside within `size` of any image edge
        return np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y)) - size
    raise ValueError(f"unknown shape kind {kind!r}")
