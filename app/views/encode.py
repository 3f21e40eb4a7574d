"""Encode: how the multi-scale residual quantizer turns a real image into VAR's pyramid of token maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import downloads, figures, inputs, loaders, state, traces, ui

st.title("Encode: an image becomes a pyramid of token maps")
ui.explain(
    "The tokenizer encodes the image to a latent map `f`. Then, for k = 1..K: take what is still unexplained "
    "(the **rest**, f − f_hat), shrink it to the k-th side, snap every vector to its nearest codebook entry (the "
    "**tokens**), enlarge the chosen entries back and pass them through a small conv φ: that is the scale's "
    "**contribution**, added to `f_hat` and taken from the rest. `f_hat` after k scales decodes to a coarse "
    "version of the image. Click a token to pick its position: it is framed on every panel, and the same image "
    "area stays picked on every scale (hover over a token for its id).",
    "The rest shrinks scale after scale, and PSNR rises: the first scales capture layout and colour, the "
    "last ones fine detail. VAR's transformer is trained to predict exactly these token maps, coarse to fine.",
    ("images_as_tokens", "multiscale_residual"))

# A click on the token map picks a position (as on the Generate page). The map's key names the scale and the
# position picked when it was drawn, so every pick draws a fresh map with no selection left in it, and a selection
# found under the current key is always a new click; it is applied before anything of the scale is drawn, so every
# panel shows the new position. The point is kept as fractions of the image (state.Settings.pick_y / pick_x, shared
# with Generate), so the same image area stays picked on every scale.
PANEL_PX = 160          # every panel (three in a row: the clickable token map fits its column in a 1000 px window)


def _pick_key(si: int, row: int, col: int) -> str:
    return f"enc_pick_{si}_{row}_{col}"


def _take_click(si: int, side: int) -> tuple[int, int]:
    """Apply a click on scale si's token map (drawn with the current position) and return the picked (row, col)."""
    s = state.get()
    row, col = s.position(side)
    cells = figures.picked_cells(st.session_state.get(_pick_key(si, row, col)), side) - {(row, col)}
    if cells:
        s.pick(*sorted(cells)[0], side)
    return s.position(side)


model = ui.current_model()
size = model.image_size

left, right = st.columns([2, 3])
with left:
    source = state.bound(st.radio, "Image", "enc_source", default="Built-in sample",
                         options=["Built-in sample", "Upload"], horizontal=True)
    data, name = None, None
    if source == "Built-in sample":
        sample = state.bound(st.selectbox, "Sample", "enc_sample", options=inputs.sample_names(model))
        try:
            data, name = inputs.sample_image_png(sample, size), sample
        except Exception as err:      # noqa: BLE001
            st.error(f"Could not load the sample {sample!r}: {loaders.friendly_error(err)}")
    else:
        up = st.file_uploader(f"An image (PNG, JPEG, ...; up to {inputs.MAX_UPLOAD_MB} MB)", key="enc_upload",
                              max_upload_size=inputs.MAX_UPLOAD_MB)
        if up is not None:
            data, name = up.getvalue(), up.name
        else:
            st.info(f"Upload an image (up to {inputs.MAX_UPLOAD_MB} MB); {inputs.fit_note(model)}.")
if data is None:
    st.stop()

try:
    trace = traces.encode_trace(model.key, data, name)
except inputs.ImageInputError as err:
    st.error(str(err))
    st.stop()
except Exception as err:      # noqa: BLE001
    st.error(f"Could not encode this image: {loaders.friendly_error(err)}")
    st.stop()

with left:
    for note in trace.notes:
        st.warning(f"Your image was {note}.")
    st.image(figures.enlarge(trace.input, 192), caption=f"what the tokenizer sees ({size}x{size})", width=192)

steps = trace.steps
K = len(steps)
rest_share = [float(s.rest_norm[0]) for s in steps]
psnr = [float(s.psnr()[0]) for s in steps]
with right:
    df = pd.DataFrame({"scale": [f"{s.scale + 1}: {s.pn}x{s.pn}" for s in steps],
                       "rest left (share of ||f||)": rest_share, "PSNR (dB)": psnr,
                       "codebook entries used": [s.codes_used for s in steps]})
    a, b = st.columns(2)
    a.line_chart(df, x="scale", y="rest left (share of ||f||)", height=220)
    b.line_chart(df, x="scale", y="PSNR (dB)", height=220)

k = state.bound(st.slider, "Scale", "enc_scale", default=1, min_value=1, max_value=K)
si = k - 1
step = steps[si]
side = step.pn
row, col = _take_click(si, side)
vmax = max(float(s.contribution[0].norm(dim=0).max()) for s in steps)
st.subheader(f"Scale {k} of {K}: {side}x{side} tokens, {step.codes_used} distinct codebook entries "
             f"(of {step.vocab_size})")
pics = [
    (f"rest before, shrunk to {side}x{side}", figures.channel_norm(step.target[0].numpy())),
    None,                                                      # the token map: clickable, drawn below
    ("this scale's contribution", figures.channel_norm(step.contribution[0].numpy(), vmax=vmax)),
    ("rest after", figures.channel_norm(step.rest[0].numpy(), vmax=float(steps[0].rest[0].norm(dim=0).max()))),
    ("f_hat so far", figures.channel_norm(step.f_hat[0].numpy())),
    (f"decoded prefix: {psnr[si]:.1f} dB", figures.enlarge(traces.to_uint8(step.image())[0])),
]
for i, pic in enumerate(pics):                                 # two rows of three panels
    if i % 3 == 0:
        cols = st.columns(3)
    with cols[i % 3]:
        if pic is None:
            chart = figures.token_chart(step.tokens[0].numpy(), figures.codebook_colors(model.key), {(row, col)},
                                        px=PANEL_PX)
            st.vega_lite_chart(chart.data, chart.spec, key=_pick_key(si, row, col), on_select="rerun",
                               selection_mode=figures.PICK, width="content", theme=None)
            st.caption(f"tokens r{k}: click a token to pick it")
        else:
            cap, img = pic
            st.image(figures.mark_cell(img, side, row, col), caption=cap, width=PANEL_PX)
st.caption(f"Picked position **({row}, {col})**: token **{int(step.tokens[0, row, col])}**, framed on every panel; "
           f"the same image area stays picked on the other scales. Rest left after this scale: {rest_share[si]:.1%} "
           "of ||f||. Heat maps show the vector norm over the latent channels at each position.")
downloads.encoding_downloads(model, data, name)
DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "contribution, f_hat and rest, so far",
           "pyramid": "decoded prefixes and the input"}
kind = state.bound(st.segmented_control, "Detailed figure (as in the lessons)", "enc_detail", default="none",
                   options=list(DETAILS), format_func=DETAILS.get)
if kind not in (None, "none"):
    try:
        st.image(figures.encoding_figure(kind, model.key, data, name, si), width="stretch")
    except Exception as err:      # noqa: BLE001
        st.error(f"Could not draw this figure: {loaders.friendly_error(err)}")
with st.expander("All scales at a glance"):
    st.dataframe(df, hide_index=True)
    for col, s in zip(st.columns(K), steps):
        col.image(traces.to_uint8(s.image())[0], caption=f"{s.pn}x{s.pn}", width="stretch")
