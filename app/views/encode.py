"""Encode: how the multi-scale residual quantizer turns a real image into VAR's pyramid of token maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import core, figures, ui

st.title("Encode: an image becomes a pyramid of token maps")
ui.explain(
    "The tokenizer encodes the image to a latent map `f`. Then, for k = 1..K: take what is still unexplained "
    "(the **residual**), shrink it to the k-th side, snap every vector to its nearest codebook entry (the "
    "**tokens**), enlarge the chosen entries back, pass them through a small conv φ and add them to `f_hat`; "
    "subtract the same from the residual. `f_hat` after k scales decodes to a coarse version of the image.",
    "The residual shrinks scale after scale, and PSNR rises: the first scales capture layout and colour, the "
    "last ones fine detail. VAR's transformer is trained to predict exactly these token maps, coarse to fine.",
    ("images_as_tokens", "multiscale_residual"))

model = ui.current_model()
size = model.image_size

left, right = st.columns([2, 3])
with left:
    source = st.radio("Image", ["Built-in sample", "Upload"], horizontal=True, key="enc_source")
    data, name = None, None
    if source == "Built-in sample":
        sample = st.selectbox("Sample", core.sample_names(model), key="enc_sample")
        try:
            data, name = core.sample_image_png(sample, size), sample
        except Exception as err:      # noqa: BLE001
            st.error(f"Could not load the sample {sample!r}: {core.friendly_error(err)}")
    else:
        up = st.file_uploader(f"An image (PNG, JPEG, ...; up to {core.MAX_UPLOAD_MB} MB)", key="enc_upload",
                              max_upload_size=core.MAX_UPLOAD_MB)
        if up is not None:
            data, name = up.getvalue(), up.name
        else:
            st.info("Upload an image; it will be converted to RGB, centre-cropped to a square and resized to "
                    f"{size}x{size} (the model's size).")
if data is None:
    st.stop()

try:
    trace = core.encode_trace(model.key, data, name)
except core.ImageInputError as err:
    st.error(str(err))
    st.stop()
except Exception as err:      # noqa: BLE001
    st.error(f"Could not encode this image: {core.friendly_error(err)}")
    st.stop()

with left:
    for note in trace["notes"]:
        st.warning(f"Your image was {note}.")
    st.image(figures.enlarge(trace["input"], 192), caption=f"what the tokenizer sees ({size}x{size})", width=192)

scales = trace["scales"]
K = len(scales)
with right:
    df = pd.DataFrame({"scale": [f"{k + 1}: {s['side']}x{s['side']}" for k, s in enumerate(scales)],
                       "residual left": [s["remaining_norm"] for s in scales],
                       "PSNR (dB)": [s["psnr"] for s in scales],
                       "codebook entries used": [s["codes_used"] for s in scales]})
    a, b = st.columns(2)
    a.line_chart(df, x="scale", y="residual left", height=220)
    b.line_chart(df, x="scale", y="PSNR (dB)", height=220)

k = st.slider("Scale", 1, K, 1, key="enc_scale") - 1
s = scales[k]
prev_remaining = scales[k - 1]["remaining"] if k > 0 else None
vmax = float(max(np.linalg.norm(x["residual"], axis=0).max() for x in scales))
before_norm = s["remaining_norm"] if k == 0 else scales[k - 1]["remaining_norm"]
st.subheader(f"Scale {k + 1} of {K}: {s['side']}x{s['side']} tokens, {s['codes_used']} distinct codebook entries "
             f"(of {s['vocab_size']})")
cols = st.columns(6)
pics = [
    (f"residual before, shrunk to {s['side']}x{s['side']}", figures.channel_norm(s["target"])),
    (f"tokens r{k + 1}", figures.token_map(s["tokens"], figures.codebook_colors(model.key))),
    ("this scale's contribution", figures.channel_norm(s["residual"], vmax=vmax)),
    ("residual after", figures.channel_norm(s["remaining"],
                                            vmax=float(np.linalg.norm(scales[0]["remaining"], axis=0).max()))),
    ("f_hat so far", figures.channel_norm(s["f_hat"])),
    (f"decoded prefix: {s['psnr']:.1f} dB", figures.enlarge(s["image"])),
]
for col, (cap, img) in zip(cols, pics):
    col.image(img, caption=cap, width="stretch")
st.caption(f"Residual left after this scale: {s['remaining_norm']:.1%} of ||f||. Heat maps show the vector norm "
           "over the latent channels at each position.")
kind = st.segmented_control("Detailed figure (as in the lessons)", ["none", "tokens", "latents", "pyramid"],
                            format_func={"none": "none", "tokens": "token maps so far",
                                         "latents": "residual, f_hat and what is left, so far",
                                         "pyramid": "decoded prefixes and the input"}.get,
                            default="none", key="enc_detail")
if kind not in (None, "none"):
    try:
        st.image(figures.encoding_figure(kind, model.key, data, name, k), width="stretch")
    except Exception as err:      # noqa: BLE001
        st.error(f"Could not draw this figure: {core.friendly_error(err)}")
with st.expander("All scales at a glance"):
    st.dataframe(df, hide_index=True)
    strip = st.columns(K)
    for col, x in zip(strip, scales):
        col.image(x["image"], caption=f"{x['side']}x{x['side']}", width="stretch")
