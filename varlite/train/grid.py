"""Saving image grids as PNG (PIL). Dimension key: N images, 3 RGB, H,W image side."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def save_grid(images_N3HW: torch.Tensor, ncols: int, path: str | Path, scale: int = 2, pad: int = 2,
              row_names: list[str] | None = None) -> Path:
    """Tile images (float in [0, 1]) row by row, ``ncols`` per row, ``pad`` white pixels apart, each enlarged
    ``scale`` times (nearest), and write a PNG; ``row_names`` (one per row) are written left of the rows."""
    images = images_N3HW.detach().float().clamp(0, 1).cpu()
    N, _, H, W = images.shape
    nrows = (N + ncols - 1) // ncols
    canvas = torch.ones(3, nrows * (H + pad) + pad, ncols * (W + pad) + pad)
    for i in range(N):
        r, c = divmod(i, ncols)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        canvas[:, top:top + H, left:left + W] = images[i]
    u8 = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(np.ascontiguousarray(u8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    if row_names:
        margin = 7 * max(len(name) for name in row_names) + 8
        labelled = Image.new("RGB", (image.width + margin, image.height), "white")
        labelled.paste(image, (margin, 0))
        draw = ImageDraw.Draw(labelled)
        row_height = (H + pad) * scale
        for r, name in enumerate(row_names[:nrows]):
            draw.text((4, pad * scale + r * row_height + row_height // 2 - 6), name, fill="black")
        image = labelled
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
