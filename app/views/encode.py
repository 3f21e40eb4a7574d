"""Encode: how the multi-scale residual quantizer turns a real image into VAR's pyramid of token maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import downloads, figures, inputs, models, state, traces, ui

st.title("Encode: an image becomes a pyramid of token maps")
ui.explain(
    "The tokenizer encodes the image to a latent map `f`. Then, for k = 1..K: take what is still unexplained "
    "(the **rest**, f − f_hat), shrink it to the k-th side, snap every vector to its nearest codebook entry (the "
    "**tokens**), enlarge the chosen entries back and pass them through a small conv φ: that is the scale's "
    "**contribution**, added to `f_hat` and taken from the rest. `f_hat` after k scales decodes to a coarse "
    "version of the image.",
    "The rest shrinks scale after scale, and PSNR rises: the first scales capture layout and colour, the "
    "last ones fine detail. VAR's transformer is trained to predict exactly these token maps, coarse to fine.",
    ("images_as_tokens", "multiscale_residual"))

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
            st.error(f"Could not load the sample {sample!r}: {models.friendly_error(err)}")
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
    st.error(f"Could not encode this image: {models.friendly_error(err)}")
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
    df = pd.DataFrame({"scale": [f"{s.scale + 1}: {s.side}x{s.side}" for s in steps],
                       "rest left (share of ||f||)": rest_share, "PSNR (dB)": psnr,
                       "codebook entries used": [s.codes_used for s in steps]})
    a, b = st.columns(2)
    a.line_chart(df, x="scale", y="rest left (share of ||f||)", height=220)
    b.line_chart(df, x="scale", y="PSNR (dB)", height=220)

k = state.bound(st.slider, "Scale", "enc_scale", default=1, min_value=1, max_value=K)
si = k - 1
step = steps[si]
vmax = max(float(s.contribution[0].norm(dim=0).max()) for s in steps)
st.subheader(f"Scale {k} of {K}: {step.side}x{step.side} tokens, {step.codes_used} distinct codebook entries "
             f"(of {step.vocab_size})")
cols = st.columns(6)
pics = [
    (f"rest before, shrunk to {step.side}x{step.side}", figures.channel_norm(step.target[0].numpy())),
    (f"tokens r{k}", figures.token_map(step.tokens[0].numpy(), figures.codebook_colors(model.key))),
    ("this scale's contribution", figures.channel_norm(step.contribution[0].numpy(), vmax=vmax)),
    ("rest after", figures.channel_norm(step.rest[0].numpy(), vmax=float(steps[0].rest[0].norm(dim=0).max()))),
    ("f_hat so far", figures.channel_norm(step.f_hat[0].numpy())),
    (f"decoded prefix: {psnr[si]:.1f} dB", figures.enlarge(traces.to_uint8(step.image())[0])),
]
for col, (cap, img) in zip(cols, pics):
    col.image(img, caption=cap, width="stretch")
st.caption(f"Rest left after this scale: {rest_share[si]:.1%} of ||f||. Heat maps show the vector norm over the "
           "latent channels at each position.")
downloads.encoding_downloads(model, data, name)
DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "contribution, f_hat and rest, so far",
           "pyramid": "decoded prefixes and the input"}
kind = state.bound(st.segmented_control, "Detailed figure (as in the lessons)", "enc_detail", default="none",
                   options=list(DETAILS), format_func=DETAILS.get)
if kind not in (None, "none"):
    try:
        st.image(figures.encoding_figure(kind, model.key, data, name, si), width="stretch")
    except Exception as err:      # noqa: BLE001
        st.error(f"Could not draw this figure: {models.friendly_error(err)}")
with st.expander("All scales at a glance"):
    st.dataframe(df, hide_index=True)
    for col, s in zip(st.columns(K), steps):
        col.image(traces.to_uint8(s.image())[0], caption=f"{s.side}x{s.side}", width="stretch")
