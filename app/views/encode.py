"""Encode: how the multi-scale residual quantizer turns a real image into VAR's pyramid of token maps.

The page is ``main``: the image (a built-in sample or an upload), its encoding (``traces.encode_trace``: every scale
of ``VQVAE.encode_steps``, each prefix decoded), the curves of the rest and PSNR over the scales, then one scale's
panels. A click on the token map picks a position, as on the Generate page (``figures.pick_key``); the point is kept
as fractions of the image (``state.Settings.pick_y`` / ``pick_x``, shared with Generate), so the same image area stays
picked on every scale.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import downloads, figures, inputs, loaders, state, traces, ui
from app.loaders import LoadedModel
from app.traces import EncodeTrace

PANEL_PX = 160          # every panel (three in a row: the clickable token map fits its column in a 1000 px window)
PICK_CHART = "enc_pick"
DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "contribution, f_hat and rest, so far",
           "pyramid": "decoded prefixes and the input"}


def _take_click(si: int, pn: int) -> tuple[int, int]:
    """Apply a click on scale si's token map (drawn with the current position) and return the picked (row, col)."""
    s = state.get()
    row, col = s.position(pn)
    cells = figures.picked_cells(st.session_state.get(figures.pick_key(PICK_CHART, si, row, col)), pn) - {(row, col)}
    if cells:
        s.pick(*sorted(cells)[0], pn)
    return s.position(pn)


def choose_image(model: LoadedModel) -> tuple[bytes, str]:
    """(the bytes, the name) of the image to encode: a built-in sample or an upload; the page stops without one."""
    source = state.bound(st.radio, "Image", "enc_source", default="Built-in sample",
                         options=["Built-in sample", "Upload"], horizontal=True)
    if source == "Built-in sample":
        sample = state.bound(st.selectbox, "Sample", "enc_sample", options=inputs.sample_names(model))
        try:
            return inputs.sample_image_png(sample, model.image_size), sample
        except Exception as err:      # noqa: BLE001
            st.error(f"Could not load the sample {sample!r}: {loaders.friendly_error(err)}")
            st.stop()
    up = st.file_uploader(f"An image (PNG, JPEG, ...; up to {inputs.MAX_UPLOAD_MB} MB)", key="enc_upload",
                          max_upload_size=inputs.MAX_UPLOAD_MB)
    if up is None:
        st.info(f"Upload an image (up to {inputs.MAX_UPLOAD_MB} MB); {inputs.fit_note(model)}.")
        st.stop()
    return up.getvalue(), up.name


def encode(model: LoadedModel, data: bytes, name: str) -> EncodeTrace:
    """The encoding of the image; a file that is not a usable image, or a failure, ends the page with a message."""
    try:
        return traces.encode_trace(model.key, data, name)
    except inputs.ImageInputError as err:
        st.error(str(err))
        st.stop()
    except Exception as err:      # noqa: BLE001
        st.error(f"Could not encode this image: {loaders.friendly_error(err)}")
        st.stop()


def scale_panels(model: LoadedModel, trace: EncodeTrace, si: int) -> None:
    """Scale si: the rest before it, its clickable token map, its contribution, the rest after it, f_hat so far and
    the decoded prefix, two rows of three panels, the picked position framed on each."""
    steps, K = trace.steps, len(trace.steps)
    step = steps[si]
    pn = step.pn
    row, col = _take_click(si, pn)
    vmax = max(float(s.contribution[0].norm(dim=0).max()) for s in steps)
    entries = "entry" if step.codes_used == 1 else "entries"
    st.subheader(f"Scale {si + 1} of {K}: {pn}x{pn} tokens, {step.codes_used} distinct codebook {entries} "
                 f"(of {step.vocab_size})")
    pics = [
        (f"rest before, shrunk to {pn}x{pn}", figures.channel_norm(step.target[0].numpy())),
        None,                                                      # the token map: clickable, drawn below
        ("this scale's contribution", figures.channel_norm(step.contribution[0].numpy(), vmax=vmax)),
        ("rest after", figures.channel_norm(step.rest[0].numpy(), vmax=float(steps[0].rest[0].norm(dim=0).max()))),
        ("f_hat so far", figures.channel_norm(step.f_hat[0].numpy())),
        (f"decoded prefix: {float(step.psnr()[0]):.1f} dB", figures.enlarge(traces.to_uint8(step.image())[0])),
    ]
    for i, pic in enumerate(pics):                                 # two rows of three panels
        if i % 3 == 0:
            cols = st.columns(3)
        with cols[i % 3]:
            if pic is None:
                chart = figures.token_chart(step.tokens[0].numpy(), figures.codebook_colors(model.key), {(row, col)},
                                            px=PANEL_PX)
                st.vega_lite_chart(chart.data, chart.spec, key=figures.pick_key(PICK_CHART, si, row, col),
                                   on_select="rerun", selection_mode=figures.PICK, width="content", theme=None)
                st.caption(f"tokens r{si + 1}: click a token to pick it")
            else:
                cap, img = pic
                st.image(figures.mark_cell(img, pn, row, col), caption=cap, width=PANEL_PX)
    st.caption(f"Picked position **({row}, {col})**: token **{int(step.tokens[0, row, col])}**, framed on every "
               f"panel; the same image area stays picked on the other scales. Rest left after this scale: "
               f"{float(step.rest_norm[0]):.1%} of ||f||. Heat maps show the vector norm over the latent channels at "
               "each position.")


def encoding_view(model: LoadedModel) -> None:
    """The image, its encoding, the curves over the scales, one scale's panels, the downloads and figures."""
    size = model.image_size
    left, right = st.columns([2, 3])
    with left:
        data, name = choose_image(model)
    trace = encode(model, data, name)
    with left:
        for note in trace.notes:
            st.warning(f"Your image was {note}.")
        st.image(figures.enlarge(trace.input, 192), caption=f"what the tokenizer sees ({size}x{size})", width=192)
    steps = trace.steps
    df = pd.DataFrame({"scale": [f"{s.scale + 1}: {s.pn}x{s.pn}" for s in steps],
                       "rest left (share of ||f||)": [float(s.rest_norm[0]) for s in steps],
                       "PSNR (dB)": [float(s.psnr()[0]) for s in steps],
                       "codebook entries used": [s.codes_used for s in steps]})
    with right:
        a, b = st.columns(2)
        a.line_chart(df, x="scale", y="rest left (share of ||f||)", height=220)
        b.line_chart(df, x="scale", y="PSNR (dB)", height=220)
    k = state.bound(st.slider, "Scale", "enc_scale", default=1, min_value=1, max_value=len(steps))
    scale_panels(model, trace, k - 1)
    downloads.download_buttons("enc_export", lambda kind: downloads.encoding_file(model.key, data, name, kind),
                               f"varlite_{model.name}_encoding", cli_hint=False)   # GIF, PNG strip and HTML page
    kind = state.bound(st.segmented_control, "Detailed figure (as in the lessons)", "enc_detail", default="none",
                       options=list(DETAILS), format_func=DETAILS.get)
    if kind not in (None, "none"):
        try:
            st.image(figures.encoding_figure(kind, model.key, data, name, k - 1), width="stretch")
        except Exception as err:      # noqa: BLE001
            st.error(f"Could not draw this figure: {loaders.friendly_error(err)}")
    with st.expander("All scales at a glance"):
        st.dataframe(df, hide_index=True)
        for col, s in zip(st.columns(len(steps)), steps):
            col.image(traces.to_uint8(s.image())[0], caption=f"{s.pn}x{s.pn}", width="stretch")



def main() -> None:
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
    model = ui.current_model()
    ui.drawn_or_explained(encoding_view, model)


main()
