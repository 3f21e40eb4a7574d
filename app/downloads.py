"""Step-through downloads: a generation or an encoding as an animated GIF (one frame per scale: token map,
contribution, image so far) or a PNG strip of every scale, and a generation as one self-contained HTML page to step
through in any browser (click a token for its candidates; ``varlite.html_export``), all made by ``varlite.export``
-- the same files as ``python -m varlite figure``. The HTML page shows what only a generation has (candidates, the
attention mask), so an encoding has no HTML download (the library refuses one).

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
                                            "its top candidates.")}
ENCODING_KINDS = ("gif", "png")       # html_export shows a generation only


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
    """The encoding of an image (``traces.encode_trace``) as a GIF or PNG strip."""
    model = load_model(model_key)
    steps = traces.encode_trace(model_key, data, name).steps
    title = f"varlite {model.name}: encoding {name}"
    return export.step_through_bytes(kind, steps, model.vqvae.quantize.embedding.weight, title=title)


def download_buttons(key: str, make: Callable[[str], bytes], stem: str, kinds=tuple(KINDS)) -> None:
    """A download button per kind, side by side; ``make(kind)`` runs when one is clicked."""
    with st.container(horizontal=True, gap="small"):
        safe_stem = re.sub(r"[^\w.-]+", "_", stem)
        for kind in kinds:
            label, mime, what = KINDS[kind]
            st.download_button(f"Step-through as {label}", data=lambda kind=kind: make(kind),
                               file_name=f"{safe_stem}.{kind}", mime=mime, key=f"{key}_{kind}", on_click="ignore",
                               icon=":material/download:",
                               help=f"{what} The same as `python -m varlite figure --out step_through.{kind}`.")


def generation_downloads(model: LoadedModel, settings: GenSettings) -> None:
    """The download buttons of a generation (the Generate page's setting A): GIF, PNG strip, HTML page."""
    download_buttons("gen_export", lambda kind: generation_file(settings, kind),
                     f"varlite_{model.name}_class{settings.label}_seed{settings.seed}")


def encoding_downloads(model: LoadedModel, data: bytes, name: str) -> None:
    """The download buttons of an encoding (the Encode page's image): GIF and PNG strip."""
    download_buttons("enc_export", lambda kind: encoding_file(model.key, data, name, kind),
                     f"varlite_{model.name}_encoding", ENCODING_KINDS)
