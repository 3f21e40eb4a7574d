"""Step-through downloads: a generation or an encoding as an animated GIF (one frame per scale: token map,
contribution, image so far), a PNG strip of every scale, or one self-contained HTML page to step through in any
browser (``varlite.html_export``: click a token for a generation's candidates, for an encoding's nearest codebook
entries), all made by ``varlite.export`` -- a generation's are the same files as ``python -m varlite figure``.

A file is made only when its button is clicked (Streamlit's deferred download data, run off the page's script),
then cached: ``st.cache_data`` with at most 16 files per kind of source, each kept an hour at most.
"""
from __future__ import annotations

import re
from typing import Callable

import streamlit as st

from app import traces, ui
from app.loaders import LoadedModel, load_model
from app.traces import GenSettings
from varlite import export

KINDS = {"gif": ("GIF", "image/gif", "For a slide: an animation, one frame per scale (token map, contribution, "
                                     "image so far)."),
         "png": ("PNG strip", "image/png", "For a slide: every scale side by side (token map, contribution, image so "
                                           "far)."),
         "html": ("HTML page", "text/html", "One self-contained page that opens in any browser, offline, on a phone "
                                            "too: step through the scales with the arrow keys, click a token to see "
                                            "its top candidates (an encoding: its nearest codebook entries).")}


@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def generation_file(settings: GenSettings, kind: str) -> bytes:
    """The whole generation of ``settings`` (waited for) as a GIF, a PNG strip or an HTML page; every prefix image
    decoded once."""
    model = load_model(settings.model_key)
    run = traces.finished_generation(settings)
    steps = [run.step_with_image(si, model) for si in range(run.num_scales)]
    title = f"varlite {model.name}: {ui.settings_caption(model, settings)}"
    return export.step_through_bytes(kind, steps, model.vqvae.quantize.embedding.weight, title=title)


@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def encoding_file(model_key: str, data: bytes, name: str, kind: str) -> bytes:
    """The encoding of an image (``traces.encode_trace``) as a GIF, a PNG strip or an HTML page."""
    model = load_model(model_key)
    steps = traces.encode_trace(model_key, data, name).steps
    title = f"varlite {model.name}: encoding {name}"
    return export.step_through_bytes(kind, steps, model.vqvae.quantize.embedding.weight, title=title)


def download_buttons(key: str, make: Callable[[str], bytes], stem: str, kinds=tuple(KINDS),
                     cli_hint: bool = True) -> None:
    """A download button per kind, side by side; ``make(kind)`` runs when one is clicked. ``cli_hint``: the help
    names the command that writes the same file (``figure`` exports generations only)."""
    with st.container(horizontal=True, gap="small"):
        safe_stem = re.sub(r"[^\w.-]+", "_", stem)
        for kind in kinds:
            label, mime, what = KINDS[kind]
            st.download_button(f"Step-through as {label}", data=lambda kind=kind: make(kind),
                               file_name=f"{safe_stem}.{kind}", mime=mime, key=f"{key}_{kind}", on_click="ignore",
                               icon=":material/download:",
                               help=f"{what} The same as `python -m varlite figure --out step_through.{kind}`."
                               if cli_hint else what)


def generation_downloads(model: LoadedModel, settings: GenSettings) -> None:
    """The download buttons of a generation (the Generate page's setting A): GIF, PNG strip, HTML page."""
    download_buttons("gen_export", lambda kind: generation_file(settings, kind),
                     f"varlite_{model.name}_class{settings.label}_seed{settings.seed}")
