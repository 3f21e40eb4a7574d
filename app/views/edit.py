"""Edit: zero-shot in-painting, out-painting, class editing and token surgery -- the same generation loop with some
tokens fixed in advance (``varlite.editing``).

The region is painted on a clickable grid (``figures.clickable_map``): a click switches a cell, a dragged box adds
its cells (or removes them, with the eraser). As on the Generate page, each change draws a fresh chart (its key
carries a version number), so a selection found under the current key is always a new gesture; it is applied
before anything is drawn. The rectangle sliders are a preset: moving them replaces the painted region.

The page is ``main``: the source, the edit, the region (or the tokens of token surgery), then the result, each a
function given the model and what the earlier steps chose; the session's settings come from ``state.get()``.
"""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app import edits, figures, inputs, loaders, state, traces, ui
from app.edits import EDIT_OPS, EditSource
from app.loaders import LoadedModel
from varlite import editing

REGENERATE = np.array([240, 120, 20], float)        # orange: what the model generates
REPLACED = np.array([40, 110, 230], np.uint8)        # blue: tokens token surgery replaced


def _version(key: str) -> int:
    return state.get().view.setdefault(key, 0)


def _apply_paint(chart_key: str, cells: frozenset, side: int, erase: bool) -> tuple[frozenset, bool]:
    """(the cells after the gesture found under ``chart_key``, whether there was one): a click switches the clicked
    cell; a dragged box adds its cells (removes them with ``erase``). A click also leaves a one-cell box (the
    interval selection starts on the same pointer press), so a box inside the clicked cells is a click."""
    selection = (st.session_state.get(chart_key) or {}).get("selection") or {}
    clicked = figures.picked_cells({"selection": {figures.PICK: selection.get(figures.PICK)}}, side)
    boxed = figures.picked_cells({"selection": {figures.BRUSH: selection.get(figures.BRUSH)}}, side)
    if clicked and boxed <= clicked:
        return cells ^ clicked, True
    if boxed:
        return (cells - boxed if erase else cells | boxed), True
    return cells, False


def _cells(mask: np.ndarray) -> frozenset:
    return frozenset((int(r), int(c)) for r, c in zip(*np.nonzero(mask)))


def paint_grid(key: str, side: int, cells: frozenset, picture: np.ndarray | None = None,
               tokens: edits.ScalePrediction | None = None, colors_V3: np.ndarray | None = None) -> None:
    """The clickable grid: every cell in the mean colour of its patch of ``picture``, the painted cells tinted
    orange; or, with ``tokens``, every cell in its token's codebook colour (``colors_V3``) with the model's
    probability and entropy in its tooltip. The picked cells are framed."""
    if tokens is None:
        n = picture.shape[0] // side
        means = picture[:n * side, :n * side].reshape(side, n, side, n, 3).mean(axis=(1, 3)) / 255
        painted = edits.region_mask(frozenset(cells), side)[..., None]
        rgb = np.where(painted, 0.45 * means + 0.55 * REGENERATE / 255, means)
        df = figures.grid_frame(side, colour=np.array(figures.hex_colors(rgb.reshape(-1, 3))), painted=painted[..., 0])
        tooltip = figures.CELL_TOOLTIP[:2] + [{"field": "painted", "type": "nominal"}]
    else:
        df = figures.grid_frame(side, token=tokens.tokens,
                                colour=np.array(figures.hex_colors(colors_V3[tokens.tokens.reshape(-1)])),
                                probability=tokens.probability, entropy=tokens.entropy)
        tooltip = figures.CELL_TOOLTIP + figures.SURENESS_TOOLTIP
    chart = figures.clickable_map(df, figures.COLOUR_FIELD, tooltip, side, set(cells), px=256, brush=True)
    st.vega_lite_chart(chart.data, chart.spec, key=key, on_select="rerun",
                       selection_mode=[figures.PICK, figures.BRUSH], width="content", theme=None)


def keep_picture(keep_hw: np.ndarray, replaced_hw: np.ndarray | None = None) -> bytes:
    """A keep mask as a small framed picture: white = the source's token is kept, orange = generated, and blue =
    replaced (``replaced_hw``: the cells token surgery set to its token, which the keep mask counts as fixed)."""
    rgb = np.where(keep_hw.astype(bool)[..., None], np.array([255, 255, 255], np.uint8), REGENERATE.astype(np.uint8))
    if replaced_hw is not None:
        rgb = np.where(replaced_hw.astype(bool)[..., None], REPLACED, rgb)
    return figures.png(np.pad(figures.enlarge(rgb, 60), ((1, 1), (1, 1), (0, 0)), constant_values=120))


def mask_strip(keeps: list[np.ndarray], patch_nums: tuple[int, ...], caption: str) -> None:
    """One keep mask per scale (``keep_picture``), under a caption."""
    st.caption(caption)
    for keep, pn, col in zip(keeps, patch_nums, st.columns(len(patch_nums))):
        col.image(keep_picture(keep), width="stretch", caption=f"{pn}x{pn}")


# ------------------------------------------------------------------------------------------------ 1. the source
def source_picker(model: LoadedModel) -> EditSource:
    """The image to edit: the Generate page's generation (its class and seed chosen here), a sample or an upload."""
    st.markdown("**1. The image to edit**")
    src_kind = state.bound(st.radio, "Source", "edit_source", default="A generated image",
                           options=["A generated image", "A sample image", "Upload"], horizontal=True)
    if src_kind == "A generated image":
        a, b = st.columns(2)
        with a:
            ui.class_picker(model, "edit_src_class", field="label", label="Class of the source")
        with b:
            state.bound(st.number_input, "Seed of the source", "edit_src_seed", field="seed", min_value=0,
                        max_value=2**31 - 1)
        source = EditSource(settings=ui.generation_settings(model))
        st.caption(f"The Generate page's image: {ui.settings_caption(model, source.settings)}.")
        try:
            traces.finished_generation(source.settings)
        except Exception as err:      # noqa: BLE001
            st.error(f"The source could not be generated: {loaders.friendly_error(err)}")
            st.stop()
        return source
    if src_kind == "A sample image":
        sample = state.bound(st.selectbox, "Sample", "edit_sample", options=inputs.sample_names(model))
        return EditSource(image=inputs.sample_image_png(sample, model.image_size), name=sample)
    up = st.file_uploader(f"An image (up to {inputs.MAX_UPLOAD_MB} MB)", key="edit_upload",
                          max_upload_size=inputs.MAX_UPLOAD_MB)
    if up is None:
        st.info(f"Upload an image to edit (up to {inputs.MAX_UPLOAD_MB} MB), or pick another source.")
        st.stop()
    source = EditSource(image=up.getvalue(), name=up.name)
    try:
        notes = inputs.model_image(source.image, source.name, model.image_size).notes     # decoded once per upload
    except inputs.ImageInputError as err:
        st.error(str(err))
        st.stop()
    for note in notes:
        st.warning(f"Your image was {note}.")
    return source


# ------------------------------------------------------------------------------------------------ 2. the edit
def edit_choice(model: LoadedModel, source: EditSource) -> tuple[str, int, int, float]:
    """(the edit of ``EDIT_OPS``, the class of the generated part, the seed, the guidance) as chosen."""
    st.markdown("**2. What to do**")
    op = state.bound(st.radio, "Edit", "edit_op", default="class", options=list(EDIT_OPS), format_func=EDIT_OPS.get)
    if op == "class":
        label = ui.class_picker(model, "edit_class_label", label="New class for the region",
                                options=list(range(model.num_classes)), default=min(2, model.num_classes - 1))
    else:
        default_label = (source.settings.label if op == "surgery" and source.settings is not None
                         else model.num_classes)
        label = ui.class_picker(model, f"edit_label_{op}", label="Class for the generated part", default=default_label)
    a, b = st.columns(2)
    with a:
        seed = state.bound(st.number_input, "Seed of the edit", "edit_seed", default=0, min_value=0,
                           max_value=2**31 - 1)
    with b:
        cfg = state.bound(st.slider, "Guidance (cfg)", "edit_cfg", default=model.default("cfg"), min_value=0.0,
                          max_value=8.0, step=0.5)
    return op, int(label), int(seed), float(cfg)


# ------------------------------------------------------------------------------------------------ 3. the region
def mask_region(model: LoadedModel, source: EditSource, op: str) -> edits.Region:
    """The region of a mask edit on the final token grid: the rectangle preset, or cells painted over it."""
    s = state.get()
    H = model.patch_nums[-1]
    st.markdown("**3. The region** " + ("(what to regenerate)" if op != "outpaint" else "(what to keep)"))
    with st.expander("Rectangle preset (fractions of the image; moving a slider replaces the painted region)"):
        ys = state.bound(st.slider, "Rows (top → bottom)", "edit_rows", default=(0.5, 1.0), min_value=0.0,
                         max_value=1.0, step=0.05)
        xs = state.bound(st.slider, "Columns (left → right)", "edit_cols", default=(0.0, 1.0), min_value=0.0,
                         max_value=1.0, step=0.05)
    box = (ys[0], xs[0], ys[1], xs[1])
    box_ok = ys[1] > ys[0] and xs[1] > xs[0]
    erase = state.bound(st.toggle, "Eraser (a dragged box removes cells)", "edit_erase", default=False)
    by_hand = s.view.get("edit_cells")                 # (the box painting started from, the cells) or None
    if by_hand is not None and by_hand[0] != box:       # the sliders moved since: the preset wins
        by_hand = s.view["edit_cells"] = None
    cells = by_hand[1] if by_hand is not None else (_cells(edits.region_mask(box, H)) if box_ok else frozenset())
    key = f"edit_paint_{_version('edit_paint_v')}"
    new_cells, gesture = _apply_paint(key, cells, H, erase)
    if gesture:                                         # applied: the next gesture goes to a fresh chart
        cells, by_hand = new_cells, (box, new_cells)
        s.view["edit_cells"] = by_hand
        s.view["edit_paint_v"] += 1
        key = f"edit_paint_{s.view['edit_paint_v']}"
    paint_grid(key, H, cells, picture=edits.source_picture(model.key, source))
    st.caption(f"The final {H}x{H} token grid over the source: click a cell to switch it, drag a box to add "
               f"cells (with the eraser on, to remove them). "
               + ("Painted by hand." if by_hand is not None else "The rectangle preset."))
    if st.button("Clear the region", key="edit_clear"):
        s.view["edit_cells"] = (box, frozenset())
        s.view["edit_paint_v"] += 1
        st.rerun()
    if by_hand is None and not box_ok:
        st.warning("The box is empty: widen the row and column ranges.")
        st.stop()
    if not cells:
        st.warning("The region is empty: click or drag on the grid to paint cells.")
        st.stop()
    region = by_hand[1] if by_hand is not None else box
    region_HW = edits.region_mask(region, H)
    keep_HW = region_HW if op == "outpaint" else ~region_HW
    mask_strip([m[0].numpy() for m in editing.scale_keep_masks(torch.from_numpy(keep_HW), model.patch_nums)],
               model.patch_nums, "The keep mask carried to every scale by the official rule (white = kept, orange = "
                                 "generated), updated as you paint:")
    return region


def surgery_region(model: LoadedModel, source: EditSource, label: int, seed: int,
                   cfg: float) -> tuple[frozenset, int, int]:
    """(the picked cells, their scale si, the token they become) of token surgery, picked on the scale's grid."""
    s = state.get()
    K = len(model.patch_nums)
    st.markdown("**3. The tokens to replace**")
    surgery_scale = state.bound(st.selectbox, "Scale", "edit_surgery_scale", default=min(3, K - 1),
                                options=list(range(K)),
                                format_func=lambda i: f"{i + 1}: {model.patch_nums[i]}x{model.patch_nums[i]}")
    side = model.patch_nums[surgery_scale]
    pred = edits.scale_prediction(model.key, source, surgery_scale, label, cfg, s.top_k, s.top_p, seed)
    stored = s.view.get("edit_surgery_cells")
    if stored is None or stored[0] != surgery_scale:
        default = {(r, c) for r in range(min(2, side)) for c in range(min(2, side))} if side >= 4 else {(0, 0)}
        stored = s.view["edit_surgery_cells"] = (surgery_scale, frozenset(default))
    cells = stored[1]
    key = f"edit_surgery_{surgery_scale}_{_version('edit_surgery_v')}"
    new_cells, gesture = _apply_paint(key, cells, side, erase=False)
    if gesture:
        cells = new_cells
        s.view["edit_surgery_cells"] = (surgery_scale, cells)
        s.view["edit_surgery_v"] += 1
        key = f"edit_surgery_{surgery_scale}_{s.view['edit_surgery_v']}"
    paint_grid(key, side, cells, tokens=pred, colors_V3=figures.codebook_colors(model.key))
    st.caption(f"The source's tokens of scale {surgery_scale + 1} ({side}x{side}, codebook colours; hover for "
               f"the model's probability of each): click a token to pick or unpick it, drag a box to add several.")
    if not cells:
        st.warning("No token is picked: click a token of the grid.")
        st.stop()
    first = sorted(cells)[0]
    source_token = int(pred.tokens[first])
    where = state.bound(st.radio, "Replace with", "edit_surgery_from", default="candidates", horizontal=True,
                        options=["candidates", "codebook"],
                        format_func={"candidates": f"one of the model's top {edits.CANDIDATES} at {first}",
                                     "codebook": "any codebook entry"}.get)
    if where == "candidates":
        cands = [int(t) for t in pred.candidates[first]]
        probs = dict(zip(cands, pred.candidate_probs[first].astype(float)))
        default_token = next((t for t in cands if t != source_token), cands[0])
        surgery_token = state.bound(st.radio, "Candidate", f"edit_cand_{surgery_scale}_{first}",
                                    default=default_token, options=cands, horizontal=True,
                                    format_func=lambda t: f"{t} ({probs[t]:.0%})" + (" ← now" if t == source_token
                                                                                      else ""))
    else:
        surgery_token = state.bound(st.selectbox, "Codebook entry", "edit_codebook_token", default=0,
                                    options=list(range(model.vocab_size)), format_func=lambda t: f"token {t}")
    st.caption(f"{len(cells)} token{'s' if len(cells) > 1 else ''} of scale {surgery_scale + 1} become token "
               f"**{surgery_token}** (now {source_token} at {first}); scales 1..{surgery_scale} stay, scales "
               f"{surgery_scale + 2}..{K} are generated again.")
    return frozenset(cells), int(surgery_scale), int(surgery_token)


# ------------------------------------------------------------------------------------------------ the result
def show_result(model: LoadedModel, res: edits.EditOutcome, op: str, surgery_scale: int) -> None:
    """Before, the region and after; the kept tokens and the result after every scale; why a centred box fails."""
    st.markdown("**Before / after**")
    side = res.region.shape[0]
    idx = np.arange(res.before.shape[0]) * side // res.before.shape[0]     # pixel -> cell of the region's grid
    shade = res.region[idx][:, idx][..., None]
    marked = np.where(shade, (res.before * 0.55 + REGENERATE * 0.45), res.before).astype(np.uint8)
    c = st.columns(3)
    c[0].image(figures.enlarge(res.before, 256), caption="before (the source's tokens, decoded)", width="stretch")
    c[1].image(figures.enlarge(marked, 256), caption="the region" + (f" at scale {surgery_scale + 1}"
                                                                      if op == "surgery" else ""), width="stretch")
    c[2].image(figures.enlarge(res.after, 256), caption="after", width="stretch")
    replaced = " blue = replaced by the chosen token," if op == "surgery" else ""
    st.markdown(f"**Kept tokens at every scale** (white = kept from the source,{replaced} orange = generated) **and "
                f"the result after each scale**")
    for i, col in enumerate(st.columns(len(model.patch_nums))):
        surgery_here = op == "surgery" and i == surgery_scale
        col.image(keep_picture(res.keep[i], res.region if surgery_here else None), width="stretch",
                  caption=f"{model.patch_nums[i]}x{model.patch_nums[i]}")
        if res.steps is not None:
            col.image(res.steps[i], width="stretch")
    with st.expander("Why does keeping a centred box lose what is in it?"):
        st.markdown(
            "Out-painting the built-in `shapes` model's red disc by keeping a centred box (a quarter of the image "
            "around the middle) erases the disc: the result is a new picture, not the disc with new surroundings. "
            "The keep mask is carried to the coarser scales by bilinear resizing with a 0.5 threshold. On the 2x2 "
            "scale each token samples the mask between the box and the outside, gets exactly 0.5, and is **not** "
            "kept; on the 3x3 scale only the middle token is. So the coarse scales, which decide the layout and the "
            "colours, are generated anew (here unconditionally), and the kept fine tokens are only corrections to "
            "a coarse picture that is no longer there: tokens are not pixels, each scale adds to the scales below "
            "it.\n\n"
            "A region that follows the coarse grids (a half, a quarter) survives the resizing at every scale: the "
            "default edit here regenerates the lower half as a blue triangle and keeps the disc above it. To see "
            "the failure, choose out-painting and set the rectangle preset to rows 0.25-0.75 and columns "
            "0.25-0.75: the 2x2 mask above turns all orange.")


# ------------------------------------------------------------------------------------------------ the page
def edit_view(model: LoadedModel) -> None:
    """The source, the edit, the region (or the tokens), then the result."""
    s = state.get()
    left, right = st.columns([2, 3])
    with left:
        source = source_picker(model)
        op, label, seed, cfg = edit_choice(model, source)
        if op == "surgery":
            region, surgery_scale, surgery_token = surgery_region(model, source, label, seed, cfg)
        else:
            region, surgery_scale, surgery_token = mask_region(model, source, op), 0, 0
    req = edits.EditRequest(model.key, op, region, label, seed, cfg, s.top_k, s.top_p, surgery_scale, surgery_token,
                            source.settings, source.image, source.name)
    try:
        with st.spinner("Editing..."):
            res = edits.edit_result(req)
    except (ValueError, inputs.ImageInputError) as err:
        st.error(f"This edit cannot be done: {loaders.without_server_paths(str(err))}")
        st.stop()
    except Exception as err:      # noqa: BLE001
        st.error(f"The edit failed: {loaders.friendly_error(err)}")
        st.stop()
    with right:
        show_result(model, res, op, surgery_scale)


def main() -> None:
    st.title("Edit: fix some tokens, let VAR generate the rest")
    ui.explain(
        "Editing needs no extra training. The known image is tokenized into its K token maps; a mask on the final "
        "token grid says which tokens to keep. At every scale the kept positions take the known tokens and the model "
        "samples the others, conditioned on everything fixed so far. **In-painting** regenerates the region, "
        "**out-painting** keeps only the region, **class editing** is in-painting with a real class label, and "
        "**token surgery** replaces chosen tokens of one scale and lets the finer scales adapt.\n\n"
        "The mask is painted on the final grid and carried to every coarser scale by the official rule: resize it "
        "bilinearly and keep a token where the result is above 0.5 (a scale of at most 3 tokens is always kept).",
        "The generated region blends with its surroundings because it is sampled with the kept tokens in view at "
        "every scale. Watch the small masks: a region that is not aligned with the coarse grids disappears from "
        "them, and then even the 'kept' part of the image is redrawn. In token surgery, a change at a coarse scale "
        "changes a large area; at a fine scale it stays local.",
        ("editing",))
    model = ui.current_model()
    ui.drawn_or_explained(edit_view, model)


main()
