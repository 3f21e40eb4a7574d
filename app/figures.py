"""Pictures for the pages, cached as PNG bytes so that stepping through scales only sends cached bytes.

The figures themselves are built by ``varlite.viz`` (shared with the lessons); this module only renders them to
PNG (``fig_png``) and caches them by settings and scale. The panels shown at every step must render in a few
milliseconds, so they are plain images instead: decoded images, token maps in ``viz.codebook_colors``, channel-norm
heat maps and the block-causal mask from ``varlite.var.block_causal_bias``, enlarged and cached as PNG bytes.

Bounds: every cache here is ``st.cache_data`` with ``max_entries`` (and a one-hour ``ttl`` where keyed by settings).
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import streamlit as st
from PIL import Image

from app import traces
from app.models import load_model
from app.traces import GenSettings
from varlite import complexity, viz
from varlite.var import block_causal_bias

DPI = 80


def fig_png(fig) -> bytes:
    """Render a matplotlib Figure to PNG bytes. viz builds plain ``Figure`` objects (no pyplot), so nothing global
    is registered and the figure is freed with its last reference: safe in a multi-threaded server."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ array pictures
# Maps shown at every step are colour-mapped arrays, enlarged with nearest-neighbour so that every token stays a
# crisp square (a matplotlib figure takes 0.3-1 s to draw on a busy CPU; these take milliseconds). Display only.
DISPLAY_PX = 192


def png(rgb: np.ndarray) -> bytes:
    """uint8 (h, w, 3) -> PNG bytes (lossless: token maps must stay crisp; fast compression)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def colorize(a_hw: np.ndarray, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
             px: int = DISPLAY_PX) -> np.ndarray:
    """(h, w) numbers -> (px', px', 3) uint8 through a matplotlib colormap, each cell an integer block of pixels."""
    a = np.asarray(a_hw, dtype=np.float64)
    lo = np.nanmin(a) if vmin is None else vmin
    hi = np.nanmax(a) if vmax is None else vmax
    norm = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.uint8)
    return enlarge(rgb, px)


def enlarge(rgb_hw3: np.ndarray, px: int = DISPLAY_PX) -> np.ndarray:
    rep = max(1, px // max(rgb_hw3.shape[:2]))
    return np.repeat(np.repeat(rgb_hw3, rep, axis=0), rep, axis=1)


def mark_cell(rgb: np.ndarray, side: int, row: int, col: int) -> np.ndarray:
    """Draw a white/black frame around token (row, col) of a side x side map enlarged to ``rgb``."""
    out = rgb.copy()
    cell = out.shape[0] // side
    y0, x0 = row * cell, col * cell
    t = max(1, cell // 8)
    for colour, pad in (((0, 0, 0), 0), ((255, 255, 255), t)):
        ys, ye, xs, xe = y0 + pad, y0 + cell - pad, x0 + pad, x0 + cell - pad
        out[ys:ys + t, xs:xe] = colour
        out[ye - t:ye, xs:xe] = colour
        out[ys:ye, xs:xs + t] = colour
        out[ys:ye, xe - t:xe] = colour
    return out


def token_map(tokens_hw: np.ndarray, colors_V3: np.ndarray, px: int = DISPLAY_PX) -> np.ndarray:
    """Tokens in their codebook colours (``viz.codebook_colors``: same colour = same codebook entry on every scale,
    similar vectors = similar colours)."""
    return enlarge((colors_V3[np.asarray(tokens_hw)] * 255).astype(np.uint8), px)


def channel_norm(x_CvHW: np.ndarray, px: int = DISPLAY_PX, vmax: float | None = None) -> np.ndarray:
    """||x|| over the latent channels at every position (how much is there), as a heat map."""
    return colorize(np.linalg.norm(x_CvHW, axis=0), "magma", 0, vmax, px)


@st.cache_data(show_spinner=False, max_entries=64)
def block_mask(patch_nums: tuple[int, ...], scale: int, px: int = 240) -> bytes:
    """The full L x L block-causal mask (grey = may attend), the current scale's rows highlighted in orange."""
    allowed = (block_causal_bias(patch_nums)[0, 0] == 0).numpy()
    L = allowed.shape[0]
    rgb = np.where(allowed[..., None], np.array([150, 150, 150], np.uint8), np.array([255, 255, 255], np.uint8))
    begin = sum(p * p for p in patch_nums[:scale])
    end = begin + patch_nums[scale] ** 2
    rows = rgb[begin:end]
    rows[allowed[begin:end]] = (240, 120, 20)
    rows[~allowed[begin:end]] = (255, 225, 200)
    rgb = rgb.astype(np.uint8)
    if L < px:
        rgb = enlarge(rgb, px)
    return png(rgb)


# ------------------------------------------------------------------------------------------------ step panels
# Everything a step shows is cached as PNG bytes per (settings, scale): stepping back and forth, by any session,
# only looks bytes up. ``computed`` (how many scales exist) is part of the keys that depend on later scales.
PENDING_GREY = 235


@st.cache_data(show_spinner=False, max_entries=8)
def codebook_colors(model_key: str) -> np.ndarray:
    return viz.codebook_colors(load_model(model_key).vqvae.quantize.embedding.weight)


@st.cache_data(show_spinner=False, max_entries=2048, ttl=3600)
def step_panels(settings: GenSettings, si: int, computed: int) -> list[tuple[str, bytes]]:
    """The three panels of scale si: its token map, its contribution to f_hat (one colour scale for all the scales
    computed so far) and the image decoded from f_hat so far."""
    model = load_model(settings.model_key)
    run = traces.generation(settings)
    steps = run.steps[:computed]
    step = steps[si]
    vmax = max(float(s.contribution[0].norm(dim=0).max()) for s in steps)
    return [(f"tokens r{si + 1} ({step.side}x{step.side})",
             png(token_map(step.tokens[0].numpy(), codebook_colors(settings.model_key)))),
            ("contribution of this scale to f_hat", png(channel_norm(step.contribution[0].numpy(), vmax=vmax))),
            ("decoded so far", png(enlarge(run.image(si, model))))]


def overview_strip(settings: GenSettings, si: int) -> bytes:
    """Every scale's decoded image in one row: scales after si faded, scale si framed in orange; scales not computed
    (or, for large models, not displayed yet: they are decoded only when shown) are grey."""
    model = load_model(settings.model_key)
    run = traces.generation(settings)
    if model.image_size <= traces.DECODE_ALL_UP_TO:        # cheap: decode every computed scale now
        for i in range(len(run.steps)):
            run.image(i, model)
    return _strip(settings, si, run.num_scales, tuple(sorted(run.decoded())))


@st.cache_data(show_spinner=False, max_entries=2048, ttl=3600)
def _strip(settings: GenSettings, si: int, K: int, decoded: tuple[int, ...], thumb: int = 96, gap: int = 6) -> bytes:
    images = traces.generation(settings).decoded()
    strip = np.full((thumb + 2 * gap, K * (thumb + gap) + gap, 3), 255, np.uint8)
    for i in range(K):
        if i in decoded:
            img = images[i]
            resample = Image.NEAREST if img.shape[0] < thumb else Image.BILINEAR
            img = np.asarray(Image.fromarray(img).resize((thumb, thumb), resample))
            if i > si:
                img = (img // 4 + 190).astype(np.uint8)
        else:
            img = np.full((thumb, thumb, 3), PENDING_GREY, np.uint8)
        x = gap + i * (thumb + gap)
        if i == si:
            strip[gap // 2:gap + thumb + gap // 2, x - gap // 2:x + thumb + gap // 2] = (240, 120, 20)
        strip[gap:gap + thumb, x:x + thumb] = img
    return png(strip)


# ------------------------------------------------------------------------------------------------ varlite.viz figures
# Drill-down figures (the same as in the lessons), rendered once per settings and cached as PNG bytes.
@st.cache_data(show_spinner="Drawing...", max_entries=256, ttl=3600)
def generation_figure(kind: str, settings: GenSettings, si: int, row: int = 0, col: int = 0) -> bytes:
    """One of varlite.viz's figures for scale si of a generation (its scales 1..si+1 are computed)."""
    model = load_model(settings.model_key)
    steps = traces.generation(settings).steps[:si + 1]
    if kind == "tokens":
        fig = viz.token_map_figure(steps, model.vqvae.quantize.embedding.weight)
    elif kind == "latents":
        fig = viz.latent_figure(steps, fields=("contribution", "f_hat"))
    elif kind == "probability":
        fig = viz.probability_figure(steps[si])
    elif kind == "topk":
        fig = viz.topk_figure(steps[si], row, col)
    else:
        raise ValueError(f"unknown figure {kind!r}")
    return fig_png(fig)


@st.cache_data(show_spinner="Drawing...", max_entries=64)
def mask_figure(patch_nums: tuple[int, ...], si: int) -> bytes:
    return fig_png(viz.attention_mask_figure(patch_nums, si))


@st.cache_data(show_spinner="Drawing...", max_entries=256, ttl=3600)
def attention_figure(settings: GenSettings, si: int, row: int, col: int, layer: int, head: int | None) -> bytes:
    model = load_model(settings.model_key)
    step = traces.step_with_attention_row(traces.generation(settings).steps[si],
                                          traces.attention_at(settings, si, row, col), row, col)
    return fig_png(viz.attention_figure(step, model.patch_nums, layer, head, row, col))


@st.cache_data(show_spinner=False, max_entries=32)
def complexity_png(sides: tuple[int, ...], config) -> bytes:
    """viz.complexity_figure of complexity.scaling_rows for this model's width/depth."""
    return fig_png(viz.complexity_figure(complexity.scaling_rows(sides, config)))


@st.cache_data(show_spinner="Drawing...", max_entries=128, ttl=3600)
def encoding_figure(kind: str, model_key: str, data: bytes, name: str, si: int) -> bytes:
    """One of varlite.viz's figures for the first si+1 scales of an encoding, as PNG."""
    model = load_model(model_key)
    trace = traces.encode_trace(model_key, data, name)
    steps = trace.steps[:si + 1]
    if kind == "tokens":
        fig = viz.token_map_figure(steps, model.vqvae.quantize.embedding.weight)
    elif kind == "latents":
        fig = viz.latent_figure(steps, fields=("contribution", "f_hat", "rest"))
    elif kind == "pyramid":
        fig = viz.pyramid_figure(steps, input_image=steps[0].input_image)
    else:
        raise ValueError(f"unknown figure {kind!r}")
    return fig_png(fig)
