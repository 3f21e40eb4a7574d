"""Pictures for the pages, cached as PNG bytes so that stepping through scales only sends cached bytes.

The figures themselves are built by ``varlite.viz`` (shared with the lessons); this module only renders them to
PNG (``fig_png``) and caches them by settings and scale. The panels shown at every step must render in a few
milliseconds, so they are plain images instead: decoded images, token maps in ``viz.codebook_colors``, channel-norm
heat maps and the block-causal mask from ``varlite.core.var.block_causal_bias``, enlarged and cached as PNG bytes.

Maps a user clicks (a token map, probability and entropy, the edit mask) are Vega-Lite heat maps (``clickable_map``),
one rect per token with a tooltip; Streamlit returns a click (point selection) or a dragged box (interval
selection) to the script, and ``picked_cells`` reads the cells out of that answer. No JavaScript of our own.

Bounds: every cache here is ``st.cache_data`` with ``max_entries`` (and a one-hour ``ttl`` where keyed by settings).
"""
from __future__ import annotations

import io

from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from app import attention_jobs, traces
from app.loaders import load_model
from app.traces import GenSettings
from varlite import complexity, viz
from varlite.core.var import block_causal_bias

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
    """Draw a black/white frame around the area of token (row, col) of a side x side grid on a picture ``rgb`` of
    the whole image (a token map, a latent map or the decoded image, any size): the pixels
    [row/side, (row+1)/side) x [col/side, (col+1)/side) of it, rounded to whole pixels."""
    out = rgb.copy()
    n = out.shape[0]
    y0, y1 = round(row * n / side), round((row + 1) * n / side)
    x0, x1 = round(col * n / side), round((col + 1) * n / side)
    t = max(1, min(3, min(y1 - y0, x1 - x0) // 10))
    for colour, pad in (((0, 0, 0), 0), ((255, 255, 255), t)):
        ys, ye, xs, xe = y0 + pad, y1 - pad, x0 + pad, x1 - pad
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


MASK_MAX_PX = 512      # the mask image's side at most: L = 2,240 tokens (d36, 512 px) would be a 2,240-px image


def mask_rows_shown(L: int, side: int, begin: int, end: int, query: int | None) -> np.ndarray:
    """Which token each of the ``side`` pixel rows (or columns) of a downsampled L x L mask shows: the token at the
    pixel's centre, except that the current scale's tokens [begin, end) keep at least one pixel row and the query
    its own (every token of a scale has the same row of the block-causal mask, so no row pattern is lost)."""
    shown = ((np.arange(side) + 0.5) * L / side).astype(int)
    first = begin * side // L
    last = max(first + 1, -(-end * side // L))
    shown[first:last] = np.clip(shown[first:last], begin, end - 1)
    if query is not None:
        shown[query * side // L] = query
    return shown


@st.cache_data(show_spinner=False, max_entries=256)
def block_mask(patch_nums: tuple[int, ...], scale: int, query: int | None = None, px: int = 240) -> bytes:
    """The full L x L block-causal mask (grey = may attend), the current scale's rows highlighted in orange and, if
    given, the row of its token number ``query`` (row-major within the scale) in blue, with blue ticks in the
    margins so that a one-pixel row stays easy to find. Longer than MASK_MAX_PX tokens, the mask is drawn
    MASK_MAX_PX pixels wide, each pixel showing one token (``mask_rows_shown``)."""
    allowed = (block_causal_bias(patch_nums)[0, 0] == 0).numpy()
    L = allowed.shape[0]
    rgb = np.where(allowed[..., None], np.array([150, 150, 150], np.uint8), np.array([255, 255, 255], np.uint8))
    begin = sum(p * p for p in patch_nums[:scale])
    end = begin + patch_nums[scale] ** 2
    rows = rgb[begin:end]
    rows[allowed[begin:end]] = (240, 120, 20)
    rows[~allowed[begin:end]] = (255, 225, 200)
    q = None if query is None else begin + query
    if q is not None:
        rgb[q, allowed[q]] = (20, 90, 220)
    rgb = rgb.astype(np.uint8)
    q_row = q                                  # the query's pixel row
    if L > MASK_MAX_PX:
        shown = mask_rows_shown(L, MASK_MAX_PX, begin, end, q)
        rgb = rgb[shown][:, mask_rows_shown(L, MASK_MAX_PX, begin, end, None)]
        q_row = None if q is None else q * MASK_MAX_PX // L
    elif L < px:
        rgb = enlarge(rgb, px)
    if q is not None:                          # ticks: a margin of 8 px left and right, blue at the query's row
        rep = max(1, rgb.shape[0] // L)
        margin = np.full((rgb.shape[0], 8, 3), 255, np.uint8)
        margin[q_row * rep:(q_row + 1) * rep] = (20, 90, 220)
        rgb = np.concatenate([margin, rgb, margin], axis=1)
    return png(rgb)


def block_mask_caption(patch_nums: tuple[int, ...], scale: int) -> str:
    """What ``block_mask`` shows of ``scale``. At the first scale the scale's one row is the 1x1 token's, one pixel
    high, and it may attend only to itself: its one orange cell is under the picked token's blue, so no orange row
    can be seen; the caption names what can (the blue corner, the ticks, the grey staircase)."""
    L = sum(p * p for p in patch_nums)
    if scale == 0:
        return (f"attention mask, L={L}: at scale 1 the only query is the 1x1 token, the top row (one pixel high; "
                f"the blue ticks in the margins point at it). It sees only itself: the blue top-left corner. The "
                f"grey staircase below is what the later scales' rows will see")
    return f"attention mask, L={L}: scale {scale + 1}'s rows in orange, the picked token's row in blue"


# ------------------------------------------------------------------------------------------------ clickable maps
PICK, BRUSH = "pick", "brush"          # names of the point and interval selections of every clickable map


def hex_colors(rgb_N3: np.ndarray) -> list[str]:
    """(N, 3) floats in [0, 1] -> ['#rrggbb', ...] (Altair takes colours as strings)."""
    return ["#%02x%02x%02x" % tuple(c) for c in (np.clip(rgb_N3, 0, 1) * 255).round().astype(int)]


def grid_frame(side: int, **columns: np.ndarray) -> pd.DataFrame:
    """One row per cell of a side x side grid: ``row``, ``col`` and each (side, side) array of ``columns``."""
    rows, cols = np.divmod(np.arange(side * side), side)
    return pd.DataFrame({"row": rows, "col": cols, **{k: np.asarray(v).reshape(-1) for k, v in columns.items()}})


@dataclass
class ClickableMap:
    """A Vega-Lite heat map to draw with ``st.vega_lite_chart(m.data, m.spec, on_select="rerun", ...)``."""
    data: pd.DataFrame
    spec: dict


def clickable_map(df: pd.DataFrame, color: dict, tooltip: list[dict], side: int, marked: set | None = None,
                  px: int = DISPLAY_PX, brush: bool = False, outline: str = "black") -> ClickableMap:
    """A side x side heat map, one rect per row of ``df`` (columns row, col, ...): a click selects a cell (point
    selection ``PICK``, shift-click adds cells); with ``brush``, a drag selects a box of cells (interval selection
    ``BRUSH``). ``color`` and ``tooltip`` are Vega-Lite encodings. Cells in ``marked`` (a set of (row, col)) are
    outlined (in ``outline``) and drawn last, so that no neighbour covers the outline (an outline of the rect itself:
    a second layer on top would catch the clicks meant for the cell). Autosize "pad" keeps the cells square
    (Streamlit's default "fit" squeezes the plot's height).

    The spec is written as a plain Vega-Lite dict rather than built with Altair: Altair validates every encoding
    against the schema, about 80 ms of server CPU per map, three maps per step (measured by
    profiling the server under bench/bench_app_load.py)."""
    marked = marked or set()
    df = df.assign(marked=[(r, c) in marked for r, c in zip(df["row"], df["col"])]).sort_values("marked",
                                                                                               kind="stable")
    grid = list(range(side))
    params = [{"name": PICK, "select": {"type": "point", "fields": ["row", "col"], "on": "click", "clear": False}}]
    if brush:
        params.append({"name": BRUSH, "select": {"type": "interval", "encodings": ["x", "y"], "clear": False}})
    axis = {"axis": None, "scale": {"domain": grid, "paddingInner": 0, "paddingOuter": 0}}
    spec = {"width": px, "height": px, "autosize": {"type": "pad"}, "params": params, "mark": {"type": "rect"},
            "encoding": {"x": {"field": "col", "type": "ordinal", **axis},
                         "y": {"field": "row", "type": "ordinal", **axis},
                         "color": color, "tooltip": tooltip,
                         "stroke": {"condition": {"test": "datum.marked", "value": outline}, "value": None},
                         "strokeWidth": {"condition": {"test": "datum.marked",
                                                       "value": max(2, min(3, px // side // 12))}, "value": 0}}}
    return ClickableMap(df, spec)


def picked_cells(event, side: int) -> set[tuple[int, int]]:
    """The cells a clickable map's selection names: the clicked cells (point selection: [{"row": r, "col": c}, ...])
    and every cell of a dragged box (interval selection: {"row": [...], "col": [...]}, the rows and columns it
    covers). ``event`` is what ``st.vega_lite_chart`` returned, or that widget's value in ``st.session_state``; None
    or an empty selection gives an empty set.

    The selection comes from the browser and may be crafted, so only whole numbers in [0, side) are read: rows and
    columns off the grid (or not numbers) are dropped before a box's rows and columns are paired, and the work is
    linear in the message plus at most side x side cells, however large a box the message names."""
    selection = event.get("selection") if isinstance(event, dict) else None
    selection = selection if isinstance(selection, dict) else {}
    points = selection.get(PICK)
    cells = set()
    for point in points if isinstance(points, list) else []:
        if isinstance(point, dict):
            row, col = grid_index(point.get("row"), side), grid_index(point.get("col"), side)
            if row is not None and col is not None:
                cells.add((row, col))
    box = selection.get(BRUSH)
    if isinstance(box, dict):
        rows, cols = grid_indices(box.get("row"), side), grid_indices(box.get("col"), side)
        cells |= {(r, c) for r in rows for c in cols}
    return cells


def grid_index(value, side: int) -> int | None:
    """``value`` as a row or column of a side x side grid: a whole number in [0, side), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        return None
    return int(value) if 0 <= value < side else None


def grid_indices(values, side: int) -> set[int]:
    """The rows or columns of the grid in a list (a box's covered values); anything else in it is dropped."""
    indices = (grid_index(v, side) for v in values) if isinstance(values, list) else ()
    return {i for i in indices if i is not None}


def pick_key(chart: str, si: int, row: int, col: int) -> str:
    """The widget key of the clickable map ``chart`` of scale si drawn with (row, col) picked. A click reruns the
    script with the map's selection in ``st.session_state`` under this key. Since the key names the scale and the
    picked position, every pick draws fresh maps (with no selection left in them), so a selection found under the
    current key is always a new click; pages read it before drawing anything, so every panel shows the new pick."""
    return f"{chart}_{si}_{row}_{col}"


CELL_TOOLTIP = [{"field": "row", "type": "ordinal"}, {"field": "col", "type": "ordinal", "title": "column"},
                {"field": "token", "type": "quantitative"}]
SURENESS_TOOLTIP = [{"field": "probability", "type": "quantitative", "format": ".1%"},
                    {"field": "entropy", "type": "quantitative", "format": ".2f", "title": "entropy (nats)"}]
COLOUR_FIELD = {"field": "colour", "type": "nominal", "scale": None}      # cells coloured by a '#rrggbb' column


def token_chart(tokens_hw: np.ndarray, colors_V3: np.ndarray, marked: set | None = None,
                probs_hw: np.ndarray | None = None, entropy_hw: np.ndarray | None = None, brush: bool = False,
                px: int = DISPLAY_PX) -> ClickableMap:
    """A clickable token map in the codebook colours (``viz.codebook_colors``); the tooltip gives each token's id and,
    when given, its probability and the entropy of its position."""
    side = tokens_hw.shape[0]
    columns = dict(token=tokens_hw, colour=np.array(hex_colors(colors_V3[tokens_hw.reshape(-1)])))
    tooltip = CELL_TOOLTIP
    if probs_hw is not None:
        columns.update(probability=probs_hw, entropy=entropy_hw)
        tooltip = CELL_TOOLTIP + SURENESS_TOOLTIP
    return clickable_map(grid_frame(side, **columns), COLOUR_FIELD, tooltip, side, marked, px, brush)


def step_chart(kind: str, tokens_hw: np.ndarray, probs_hw: np.ndarray, entropy_hw: np.ndarray, vocab_size: int,
               marked: set, px: int = DISPLAY_PX) -> ClickableMap:
    """A clickable probability (0..1, viridis) or entropy (0..ln V nats, magma) map of one scale, with the same
    tooltip as ``token_chart``; the marked cell is outlined in cyan, which neither colour map contains."""
    side = tokens_hw.shape[0]
    df = grid_frame(side, token=tokens_hw, probability=probs_hw, entropy=entropy_hw)
    field, scheme, top = ("probability", "viridis", 1.0) if kind == "probability" else ("entropy", "magma",
                                                                                          float(np.log(vocab_size)))
    color = {"field": field, "type": "quantitative", "scale": {"scheme": scheme, "domain": [0, top]}, "legend": None}
    return clickable_map(df, color, CELL_TOOLTIP + SURENESS_TOOLTIP, side, marked, px, outline="#00e5ff")


# ------------------------------------------------------------------------------------------------ step panels
# Everything a step shows is cached as PNG bytes per (settings, scale): stepping back and forth, by any session,
# only looks bytes up. ``computed`` (how many scales exist) is part of the keys that depend on later scales.
PENDING_GREY = 235


@st.cache_data(show_spinner=False, max_entries=8)
def codebook_colors(model_key: str) -> np.ndarray:
    return viz.codebook_colors(load_model(model_key).vqvae.quantize.embedding.weight)


@st.cache_data(show_spinner=False, max_entries=2048, ttl=3600)
def latent_panels(settings: GenSettings, si: int, computed: int,
                  pick: tuple[int, int] | None = None) -> list[tuple[str, bytes]]:
    """Scale si's token map and its contribution to f_hat (one colour scale for all the scales computed so far);
    with ``pick`` = (row, col), each framed around the area that token covers (``mark_cell``). No decoding: they
    can be shown as soon as the scale is computed (the image so far is ``decoded_panel``)."""
    run = traces.generation(settings)
    steps = run.steps[:computed]
    step = steps[si]
    vmax = max(float(s.contribution[0].norm(dim=0).max()) for s in steps)
    panels = [(f"tokens r{si + 1} ({step.pn}x{step.pn})", token_map(step.tokens[0].numpy(),
                                                                        codebook_colors(settings.model_key))),
              ("contribution of this scale to f_hat", channel_norm(step.contribution[0].numpy(), vmax=vmax))]
    if pick is not None:
        panels = [(caption, mark_cell(rgb, step.pn, *pick)) for caption, rgb in panels]
    return [(caption, png(rgb)) for caption, rgb in panels]


@st.cache_data(show_spinner=False, max_entries=2048, ttl=3600)
def decoded_panel(settings: GenSettings, si: int, pick: tuple[int, int] | None = None) -> tuple[str, bytes]:
    """The image decoded from f_hat after scale si (decoded on first request, which takes seconds for a 256-px d16
    image on a CPU), framed at ``pick``."""
    model = load_model(settings.model_key)
    run = traces.generation(settings)
    rgb = enlarge(run.image(si, model))
    if pick is not None:
        rgb = mark_cell(rgb, run.steps[si].pn, *pick)
    return "decoded so far", png(rgb)


def overview_strip(settings: GenSettings, si: int) -> bytes:
    """Every scale's decoded image in one row: scales after si faded, scale si framed in orange; scales not computed
    (or, for large models, not displayed yet: they are decoded only when shown) are grey."""
    model = load_model(settings.model_key)
    run = traces.generation(settings)
    if not traces.streams(model):        # small: decoding every computed scale now is cheap
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
    step = attention_jobs.step_with_attention_row(traces.generation(settings).steps[si],
                                                  attention_jobs.attention_at(settings, si, row, col), row, col)
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
