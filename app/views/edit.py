"""Edit: zero-shot in-painting, out-painting, class editing and token surgery -- the same generation loop with some
tokens fixed in advance (``varlite.editing``)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app import edits, figures, inputs, models, state, traces, ui
from app.edits import EDIT_OPS
from varlite.images import prepare_image

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
s = state.get()
H, K, V = model.patch_nums[-1], len(model.patch_nums), model.vocab_size

left, right = st.columns([2, 3])
with left:
    st.markdown("**1. The image to edit**")
    src_kind = state.bound(st.radio, "Source", "edit_source", default="A generated image",
                           options=["A generated image", "A sample image", "Upload"], horizontal=True)
    source_settings, source_image, source_name = None, None, ""
    if src_kind == "A generated image":
        a, b = st.columns(2)
        with a:
            ui.class_picker(model, "edit_src_class", field="label", label="Class of the source")
        with b:
            state.bound(st.number_input, "Seed of the source", "edit_src_seed", field="seed", min_value=0,
                        max_value=2**31 - 1)
        source_settings = ui.generation_settings(model)
        st.caption(f"The Generate page's image: {ui.settings_caption(model, source_settings)}.")
        try:
            traces.finished_generation(source_settings)
        except Exception as err:      # noqa: BLE001
            st.error(f"The source could not be generated: {models.friendly_error(err)}")
            st.stop()
    elif src_kind == "A sample image":
        sample = state.bound(st.selectbox, "Sample", "edit_sample", options=inputs.sample_names(model))
        source_image, source_name = inputs.sample_image_png(sample, model.image_size), sample
    else:
        up = st.file_uploader(f"An image (up to {inputs.MAX_UPLOAD_MB} MB)", key="edit_upload",
                              max_upload_size=inputs.MAX_UPLOAD_MB)
        if up is None:
            st.info(f"Upload an image to edit (up to {inputs.MAX_UPLOAD_MB} MB), or pick another source.")
            st.stop()
        source_image, source_name = up.getvalue(), up.name
        try:
            notes = prepare_image(inputs.read_image_bytes(source_image, source_name), model.image_size)[1]
        except inputs.ImageInputError as err:
            st.error(str(err))
            st.stop()
        for note in notes:
            st.warning(f"Your image was {note}.")

    st.markdown("**2. What to do**")
    op = state.bound(st.radio, "Edit", "edit_op", default="inpaint", options=list(EDIT_OPS), format_func=EDIT_OPS.get)
    st.markdown("**3. The box** (fractions of the image)")
    ys = state.bound(st.slider, "Rows (top → bottom)", "edit_rows", default=(0.25, 0.75), min_value=0.0,
                     max_value=1.0, step=0.05)
    xs = state.bound(st.slider, "Columns (left → right)", "edit_cols", default=(0.25, 0.75), min_value=0.0,
                     max_value=1.0, step=0.05)
    surgery_scale, surgery_token = 0, 0
    if op == "surgery":
        a, b = st.columns(2)
        with a:
            surgery_scale = state.bound(st.selectbox, "Scale to paint", "edit_surgery_scale", default=min(2, K - 1),
                                        options=list(range(K)),
                                        format_func=lambda i: f"{i + 1}: {model.patch_nums[i]}x{model.patch_nums[i]}")
        with b:
            surgery_token = state.bound(st.number_input, "Token to paint", "edit_surgery_token", default=0,
                                        min_value=0, max_value=V - 1)
    if op == "class":
        label = ui.class_picker(model, "edit_class_label", label="New class for the box",
                                options=list(range(model.num_classes)))
    else:
        default_label = model.num_classes if op in ("inpaint", "outpaint") else 0
        label = ui.class_picker(model, f"edit_label_{op}", label="Class for the generated part", default=default_label)
    a, b = st.columns(2)
    with a:
        seed = state.bound(st.number_input, "Seed of the edit", "edit_seed", default=0, min_value=0,
                           max_value=2**31 - 1)
    with b:
        cfg = state.bound(st.slider, "Guidance (cfg)", "edit_cfg", default=model.default("cfg"), min_value=0.0,
                          max_value=8.0, step=0.5)

box = (ys[0], xs[0], ys[1], xs[1])
if ys[1] <= ys[0] or xs[1] <= xs[0]:
    st.warning("The box is empty: widen the row and column ranges.")
    st.stop()
req = edits.EditRequest(model.key, op, box, int(label), int(seed), float(cfg), s.top_k, s.top_p,
                        int(surgery_scale), int(surgery_token), source_settings, source_image, source_name)
try:
    with st.spinner("Editing..."):
        res = edits.edit_result(req)
except (ValueError, inputs.ImageInputError) as err:
    st.error(f"This edit cannot be done: {err}")
    st.stop()
except Exception as err:      # noqa: BLE001
    st.error(f"The edit failed: {models.friendly_error(err)}")
    st.stop()

with right:
    st.markdown("**Before / after**")
    side = res.box.shape[0]
    idx = np.arange(res.before.shape[0]) * side // res.before.shape[0]     # pixel -> token of the box's grid
    shade = res.box[idx][:, idx][..., None]
    marked = np.where(shade, (res.before * 0.55 + np.array([255, 140, 0]) * 0.45), res.before).astype(np.uint8)
    c = st.columns(3)
    c[0].image(figures.enlarge(res.before, 256), caption="before (the source's tokens, decoded)", width="stretch")
    c[1].image(figures.enlarge(marked, 256), caption="the box" + (f" at scale {surgery_scale + 1}"
                                                                   if op == "surgery" else ""), width="stretch")
    c[2].image(figures.enlarge(res.after, 256), caption="after", width="stretch")
    st.markdown("**Kept tokens at every scale** (white = kept from the source, dark = generated) **and the result "
                "after each scale**")
    strip = st.columns(K)
    for i, col in enumerate(strip):
        col.image(figures.png(figures.colorize(res.keep[i].astype(float), "gray", 0, 1, 64)), width="stretch",
                  caption=f"{model.patch_nums[i]}x{model.patch_nums[i]}")
        if res.steps is not None:
            col.image(res.steps[i], width="stretch")
