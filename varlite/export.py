"""A step-through as a teacher's slide: an animated GIF (one frame per scale), a PNG strip (every scale at once) or a
self-contained web page to step through (``varlite.html_export``).

A frame shows scale k = 1..K in three panels:
  tokens        the token map r_k, each token in its codebook colour (``viz.codebook_colors``: the same colour is
                the same codebook entry in every frame);
  contribution  ||phi_k(upsample(e[r_k]))|| over the latent channels at every position, what scale k adds to
                f_hat, as a viridis heat map on ONE colour scale for all K scales (black-purple = 0, yellow = the
                largest norm of any scale), so the later scales visibly add less;
  image so far  the image decoded from f_hat after scales 1..k.
The GIF shows the frames one after the other (the last one held longer); the PNG strip puts the K frames side by
side as columns, the three panels as rows. The page embeds the contribution and image panels and draws the token map
from the same codebook colours, as buttons: a generation's show each position's candidates, an encoding's the
nearest codebook entries; an encoding's page also shows the rest ||f - f_hat|| after each scale (``rest_panels``).

Input: the steps of a generation (``ScaleStep``) or of an encoding (``EncodeStep``), live or ``detached()`` with
their images, plus the VQVAE's codebook. Every picture is a plain uint8 array enlarged with nearest-neighbour
(token cells stay crisp squares) and assembled with PIL: no matplotlib, exact pixel sizes.

Dimension key: B batch, h,w one scale's side, H,W final latent side, Cv latent channels, V vocabulary,
Hi,Wi image side, px panel side in pixels.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from .core.trace import EncodeStep
from .html_export import step_through_html
from .viz import codebook_colors

PANEL_TITLES = ("tokens", "contribution", "image so far")
FORMATS = (".gif", ".png", ".html")
HTML_PANEL_PX = 256          # the page's pictures: crisp at phone sizes, and the CSS keeps enlarged pixels square
GAP = 6                      # white pixels between panels
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def _font(px: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels where it can be, broken at spaces."""
    lines: list[str] = []
    for word in text.replace(" ", " \0").split("\0"):
        if lines and font.getlength(lines[-1] + word) <= width:
            lines[-1] += word
        else:
            lines.append(word)
    return [line.strip() for line in lines] if text else []


def _u8(rgb01: np.ndarray) -> np.ndarray:
    return (np.clip(rgb01, 0.0, 1.0) * 255).round().astype(np.uint8)


def _fit(rgb_hw3: np.ndarray, px: int) -> np.ndarray:
    """Resize to (px, px, 3): nearest-neighbour when enlarging (cells and pixels stay crisp squares), area
    averaging (PIL's BOX filter) when shrinking a large image."""
    h = rgb_hw3.shape[0]
    if h == px:
        return rgb_hw3
    resample = Image.NEAREST if h < px else Image.BOX
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb_hw3)).resize((px, px), resample))


def scale_panels(steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0,
                 panel_px: int = 128) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale, the (px, px, 3) uint8 panels (tokens, contribution, image so far) of batch item ``b``.

    The contribution's colour scale is shared by all the given scales: value ||contribution|| / max over every
    scale and position, through viridis. A step whose image was not decoded (``detached(decode=False)``) raises
    the step's own RuntimeError.
    """
    if not steps:
        raise ValueError("no steps to export: pass the steps of a generation or an encoding (one per scale)")
    if panel_px < 8:
        raise ValueError(f"panel_px must be at least 8 pixels; got {panel_px}")
    colors_V3 = codebook_colors(codebook_VCv)
    norms_HW = [step.contribution[b].detach().float().norm(dim=0).cpu().numpy() for step in steps]
    vmax = max(float(n.max()) for n in norms_HW) or 1.0
    viridis = colormaps["viridis"]
    panels = []
    for step, norm_HW in zip(steps, norms_HW):
        tokens_hw = step.tokens[b].detach().cpu().numpy()
        image_HiWi3 = step.image()[b].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        panels.append((_fit(_u8(colors_V3[tokens_hw]), panel_px),
                       _fit(_u8(viridis(norm_HW / vmax)[..., :3]), panel_px),
                       _fit(_u8(image_HiWi3), panel_px)))
    return panels


def rest_panels(steps: Sequence, b: int = 0, panel_px: int = HTML_PANEL_PX) -> list[np.ndarray]:
    """Per scale of an encoding, the (px, px, 3) uint8 panel of what is left to explain after it: ||f - f_hat|| over
    the latent channels through viridis, on one colour scale for all scales, 0 to the largest ||f|| of any position
    (f = f_hat + rest, the whole latent), so the rest visibly darkens scale after scale."""
    if not steps:
        raise ValueError("no steps to export: pass the steps of an encoding (one per scale)")
    f_BCvHW = steps[0].f_hat + steps[0].rest
    vmax = float(f_BCvHW[b].detach().float().norm(dim=0).max()) or 1.0
    viridis = colormaps["viridis"]
    return [_fit(_u8(viridis(step.rest[b].detach().float().norm(dim=0).cpu().numpy() / vmax)[..., :3]), panel_px)
            for step in steps]


def _scale_title(step, K: int) -> str:
    tokens = step.pn * step.pn
    return f"scale {step.scale + 1} of {K}: {step.pn}x{step.pn} = {tokens} token{'s' if tokens != 1 else ''}"


def step_frames(steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0, panel_px: int = 128,
                title: str = "") -> list[Image.Image]:
    """One RGB frame per scale: ``title`` (wrapped to the frame's width) when given, then 'scale k of K: h x w =
    l tokens', then the three panels side by side with their names above them."""
    panels = scale_panels(steps, codebook_VCv, b, panel_px)
    text_px = max(10, panel_px // 10)
    font, small = _font(text_px + 2), _font(text_px)
    width = GAP + 3 * (panel_px + GAP)
    lines = _wrap(title, font, width - 2 * GAP)
    head = GAP + (text_px + 6) * (len(lines) + 1)
    label = text_px + 6
    height = head + label + panel_px + GAP
    frames = []
    for step, row in zip(steps, panels):
        frame = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(frame)
        for i, line in enumerate(lines + [_scale_title(step, len(steps))]):
            draw.text((GAP, GAP + i * (text_px + 6)), line, fill=TEXT, font=font)
        for i, (name, panel) in enumerate(zip(PANEL_TITLES, row)):
            x = GAP + i * (panel_px + GAP)
            draw.text((x, head), name, fill=TEXT, font=small)
            frame.paste(Image.fromarray(panel), (x, head + label))
        frames.append(frame)
    return frames


def strip_image(steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0, panel_px: int = 96,
                title: str = "") -> Image.Image:
    """Every scale in one picture: column k = scale k ('k: h x w' above it), rows = tokens, contribution, image so
    far (named on the left); ``title`` (wrapped to the strip's width) above everything when given."""
    panels = scale_panels(steps, codebook_VCv, b, panel_px)
    text_px = max(10, panel_px // 8)
    font = _font(text_px)
    left = GAP + int(font.getlength(max(PANEL_TITLES, key=len))) + 2 * GAP
    K = len(steps)
    width = left + K * (panel_px + GAP)
    title_font = _font(text_px + 2)
    lines = _wrap(title, title_font, width - 2 * GAP)
    head = GAP + (text_px + 6) * (len(lines) + 1)
    strip = Image.new("RGB", (width, head + 3 * (panel_px + GAP)), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((GAP, GAP + i * (text_px + 6)), line, fill=TEXT, font=title_font)
    for r, name in enumerate(PANEL_TITLES):
        draw.text((GAP, head + r * (panel_px + GAP) + panel_px // 2 - text_px // 2), name, fill=TEXT, font=font)
    for k, (step, row) in enumerate(zip(steps, panels)):
        x = left + k * (panel_px + GAP)
        draw.text((x, head - text_px - 4), f"{step.scale + 1}: {step.pn}x{step.pn}", fill=TEXT, font=font)
        for r, panel in enumerate(row):
            strip.paste(Image.fromarray(panel), (x, head + r * (panel_px + GAP)))
    return strip


def gif_bytes(frames: Sequence[Image.Image], frame_ms: int = 800, last_ms: int = 2500) -> bytes:
    """An animated GIF of the frames, looping forever: each frame shown ``frame_ms``, the last one ``last_ms``.
    (GIF stores 256 colours per frame: PIL picks each frame's palette, so colours may shift slightly.)"""
    if not frames:
        raise ValueError("no frames to animate")
    if frame_ms < 10 or last_ms < 10:
        raise ValueError(f"frame durations are in milliseconds, at least 10 (GIF's unit); got {frame_ms}, {last_ms}")
    durations = [frame_ms] * (len(frames) - 1) + [last_ms]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=list(frames[1:]), duration=durations, loop=0)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def step_through_bytes(kind: str, steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0, title: str = "",
                       panel_px: int | None = None, frame_ms: int = 800) -> bytes:
    """The export as file bytes: ``kind`` "gif" (``step_frames`` animated), "png" (``strip_image``) or "html"
    (``html_export.step_through_html`` of ``scale_panels``, and of ``rest_panels`` for an encoding; UTF-8)."""
    if kind == "gif":
        return gif_bytes(step_frames(steps, codebook_VCv, b, panel_px or 128, title), frame_ms)
    if kind == "png":
        return png_bytes(strip_image(steps, codebook_VCv, b, panel_px or 96, title))
    if kind == "html":
        px = panel_px or HTML_PANEL_PX
        panels = scale_panels(steps, codebook_VCv, b, px)
        rests = rest_panels(steps, b, px) if all(isinstance(step, EncodeStep) for step in steps) else None
        return step_through_html(steps, codebook_VCv, panels, b, title, frame_ms, rests).encode("utf-8")
    raise ValueError(f"unknown export kind {kind!r}: expected 'gif' (animation), 'png' (strip) or 'html' (page)")


def check_export_path(path: str | os.PathLike) -> str:
    """The export kind ("gif", "png" or "html") named by a file's suffix; ValueError for anything else (checked
    before the work starts)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS or path.is_dir():
        raise ValueError(f"the export must be a .gif file (an animation, one frame per scale), a .png file (a strip "
                         f"of every scale) or an .html file (a page to step through, one file); got {str(path)!r}")
    return path.suffix.lower().lstrip(".")


def save_step_through(path: str | os.PathLike, steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0,
                      title: str = "", panel_px: int | None = None, frame_ms: int = 800) -> Path:
    """Write ``step_through_bytes`` to ``path``, the kind chosen by its suffix (.gif, .png or .html); returns the
    path."""
    kind = check_export_path(path)
    data = step_through_bytes(kind, steps, codebook_VCv, b, title, panel_px, frame_ms)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
