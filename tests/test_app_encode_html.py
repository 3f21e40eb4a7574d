"""The Encode page's 'Step-through as HTML page': offered beside the GIF and PNG strip, and the file is the library's
export (``varlite.export``, the page ``varlite.html_export`` makes of an encoding) of the page's own encoding."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("streamlit")

from tests.test_app import assert_clean, new_app, settings  # noqa: E402


def test_the_encode_page_offers_the_html_page_of_its_encoding():
    from app import downloads, inputs, loaders, traces
    from varlite import export
    from varlite.builtin import load_builtin
    from varlite.images import prepare_image
    at = new_app("views/encode.py")
    assert_clean(at)
    assert [b.key for b in at.get("download_button")] == ["enc_export_gif", "enc_export_png", "enc_export_html"]
    model = loaders.load_model("builtin:shapes")
    sample = settings(at).view["enc_sample"]
    data = inputs.sample_image_png(sample, model.image_size)
    page = downloads.encoding_file(model.key, data, sample, "html")      # what the button's click makes
    steps = traces.encode_trace(model.key, data, sample).steps          # the page's encoding (cached)
    expected = export.step_through_bytes("html", steps, model.vqvae.quantize.embedding.weight,
                                         title=f"varlite shapes: encoding {sample}")
    assert page == expected
    assert page.startswith(b"<!DOCTYPE html>") and b'"kind":"encoding"' in page
    # ... and that encoding is the library's of the same image (token maps: the page's float32 digits may differ in
    # the last bit with the thread count the trace was computed on, as another test module sets one thread)
    vqvae, _ = load_builtin("shapes")
    x_13HW, _ = prepare_image(inputs.read_image_bytes(data, sample), model.image_size)
    with torch.inference_mode():
        library_steps = list(vqvae.encode_steps(x_13HW))
    assert [step.tokens.tolist() for step in steps] == [step.tokens.tolist() for step in library_steps]
