"""Edit: zero-shot in-painting, out-painting, class editing and token surgery -- the same generation loop with some
tokens fixed in advance (``varlite.editing``)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app import core, figures, ui

st.title("Edit: fix some tokens, let VAR generate the rest")
ui.explain(
    "Editing needs no extra training. The known image is tokenized into its K token maps; a mask on the final "
    "token grid says which tokens to keep. At every scale the kept positions take the known tokens and the model "
    "samples the others, conditioned on everything fixed so far. **In-painting** regenerates the box, "
    "**out-painting** keeps only the box, **class editing** is in-painting with a real class label, and "
    "**token surgery** paints one token into a box at one scale and lets the finer scales adapt.",
    "The generated region blends with its surroundings because it is sampled with the kept tokens in view at every "
    "scale. In token surgery, a change at a coarse scale changes a large area; at a fine scale it stays local.",
    ("editing",))

model = ui.current_model()
H, K, V = model.patch_nums[-1], len(model.patch_nums), model.var.config.vocab_size
if core.optional_module("editing") is None:
    st.error("This version of varlite has no editing module (varlite.editing); editing is unavailable.")
    st.stop()

left, right = st.columns([2, 3])
with left:
    st.markdown("**1. The image to edit**")
    src_kind = st.radio("Source", ["A generated image", "A sample image", "Upload"], horizontal=True,
                        key="edit_source")
    source_settings, source_image, source_name = None, None, ""
    if src_kind == "A generated image":
        a, b = st.columns(2)
        with a:
            src_label = ui.class_picker(model, "edit_src_class", "Class of the source")
        with b:
            src_seed = st.number_input("Seed of the source", 0, 2**31 - 1, 0, key="edit_src_seed")
        source_settings = core.GenSettings(model.key, int(src_label), int(src_seed), model.default("cfg"),
                                           model.default("top_k"), model.default("top_p"), False)
        if ui.get_trace(source_settings) is None:
            st.stop()
    elif src_kind == "A sample image":
        sample = st.selectbox("Sample", core.sample_names(model), key="edit_sample")
        source_image, source_name = core.sample_image_png(sample, model.image_size), sample
    else:
        up = st.file_uploader(f"An image (up to {core.MAX_UPLOAD_MB} MB)", key="edit_upload",
                              max_upload_size=core.MAX_UPLOAD_MB)
        if up is None:
            st.info("Upload an image to edit, or pick another source.")
            st.stop()
        source_image, source_name = up.getvalue(), up.name
        try:
            _, notes = core.prepared_image(model, source_image, source_name)
        except core.ImageInputError as err:
            st.error(str(err))
            st.stop()
        for note in notes:
            st.warning(f"Your image was {note}.")

    st.markdown("**2. What to do**")
    op = st.radio("Edit", list(core.EDIT_OPS), format_func=core.EDIT_OPS.get, key="edit_op")
    st.markdown("**3. The box** (fractions of the image)")
    ys = st.slider("Rows (top → bottom)", 0.0, 1.0, (0.25, 0.75), 0.05, key="edit_rows")
    xs = st.slider("Columns (left → right)", 0.0, 1.0, (0.25, 0.75), 0.05, key="edit_cols")
    surgery_scale, surgery_token = 0, 0
    if op == "surgery":
        a, b = st.columns(2)
        surgery_scale = a.selectbox("Scale to paint", list(range(K)), index=min(2, K - 1), key="edit_surgery_scale",
                                    format_func=lambda i: f"{i + 1}: {model.patch_nums[i]}x{model.patch_nums[i]}")
        surgery_token = b.number_input("Token to paint", 0, V - 1, 0, key="edit_surgery_token")
    default_label = model.num_classes if op in ("inpaint", "outpaint") else 0
    if op == "class":
        label = st.selectbox("New class for the box", list(range(model.num_classes)), format_func=model.class_label,
                             key="edit_class_label")
    else:
        label = ui.class_picker(model, f"edit_label_{op}", "Class for the generated part", default=default_label)
    a, b = st.columns(2)
    seed = a.number_input("Seed of the edit", 0, 2**31 - 1, 0, key="edit_seed")
    cfg = b.slider("Guidance (cfg)", 0.0, 8.0, model.default("cfg"), 0.5, key="edit_cfg")

box = (ys[0], xs[0], ys[1], xs[1])
if ys[1] <= ys[0] or xs[1] <= xs[0]:
    st.warning("The box is empty: widen the row and column ranges.")
    st.stop()
req = core.EditRequest(model.key, op, box, int(label), int(seed), float(cfg), model.default("top_k"), model.default("top_p"),
                       int(surgery_scale), int(surgery_token), source_settings, source_image, source_name)
try:
    with st.spinner("Editing..."):
        res = core.edit_result(req)
except (ValueError, core.ImageInputError) as err:
    st.error(f"This edit cannot be done: {err}")
    st.stop()
except Exception as err:      # noqa: BLE001
    st.error(f"The edit failed: {core.friendly_error(err)}")
    st.stop()

with right:
    st.markdown("**Before / after**")
    side = res["box"].shape[0]
    idx = np.arange(res["before"].shape[0]) * side // res["before"].shape[0]     # pixel -> token of the box's grid
    shade = res["box"][idx][:, idx][..., None]
    marked = np.where(shade, (res["before"] * 0.55 + np.array([255, 140, 0]) * 0.45), res["before"]).astype(np.uint8)
    c = st.columns(3)
    c[0].image(figures.enlarge(res["before"], 256), caption="before (the source's tokens, decoded)", width="stretch")
    c[1].image(figures.enlarge(marked, 256), caption="the box" + (f" at scale {surgery_scale + 1}"
                                                                   if op == "surgery" else ""), width="stretch")
    c[2].image(figures.enlarge(res["after"], 256), caption="after", width="stretch")
    st.markdown("**Kept tokens at every scale** (white = kept from the source, dark = generated) **and the result "
                "after each scale**")
    strip = st.columns(K)
    for i, col in enumerate(strip):
        col.image(figures.png(figures.colorize(res["keep"][i].astype(float), "gray", 0, 1, 64)), width="stretch",
                  caption=f"{model.patch_nums[i]}x{model.patch_nums[i]}")
        if res["steps"] is not None:
            col.image(res["steps"][i], width="stretch")
