"""A step-through as one self-contained web page: open the .html file from disk, on a laptop or a phone, no server.

The page shows one generation (or one encoding, below) scale k = 1..K at a time:
  tokens         the token map r_k, each cell a button in its codebook colour (``viz.codebook_colors``, the colours
                 of the GIF and PNG exports); clicking (tapping) one shows the model's 5 most likely tokens there
                 and their probabilities (``ScaleStep.candidates(5)``, softmax of the guided logits), the chosen
                 token marked;
  contribution   ||phi_k(upsample(e[r_k]))|| over the latent channels, the export's viridis panel (one colour scale
                 for all scales);
  image so far   the image decoded from f_hat after scales 1..k;
  mask row       the block-causal mask row of scale k: its tokens (positions [begin, end) of the L-token sequence)
                 may attend to positions [0, end), every coarser scale and their own; the finer scales are masked.
An encoding (``VQVAE.encode_steps``, the paper's Algorithm 1) shows, per scale, the same page with what an encoding
has instead of what only a generation has:
  tokens         the token map r_k; clicking a cell shows the 5 codebook entries nearest to the vector it quantized
                 (the rest before this scale at side pn_k, ``EncodeStep.target``) and their Euclidean distances, the
                 entry the quantizer chose marked;
  contribution   as above;
  rest           ||f - f_hat|| after this scale, what is left to explain (``export.rest_panels``);
  image so far   the reconstruction decoded from f_hat after scales 1..k, with its PSNR against the input;
and no attention mask (encoding has no transformer).
Previous / next buttons, the scale buttons, the left / right arrow keys and a horizontal swipe step the scales; Play
steps them every ``frame_ms`` milliseconds, as the GIF does. One page engine serves both: the JSON says which
(``kind``); the page's text, its styles and its script are in ``varlite.html_page``.

Self-contained: the styles and the script are inline, the pictures are PNG data: URIs, everything else is one JSON
document in the page (per scale: side, positions, guidance, token map, chosen token's probability, candidates), and
the page loads nothing: no network, no fonts, no CDN. Probabilities and distances are written as the shortest
decimal that reads back as the same float32, so the page holds the trace's numbers exactly.

Dimension key: B batch, h,w one scale's side, l = h*w positions, Cv latent channels, V vocabulary, k candidates,
px panel side in pixels.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .core.trace import EncodeStep, ScaleStep
from .html_page import PAGE, PARTS
from .viz import OKABE_ITO, codebook_colors

TOP_CANDIDATES = 5          # tokens listed per position


def _hex(rgb01) -> str:
    r, g, b = (int(round(float(v) * 255)) for v in np.clip(np.asarray(rgb01)[:3], 0.0, 1.0))
    return f"#{r:02x}{g:02x}{b:02x}"


def _png_data_uri(panel_hw3: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(panel_hw3).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _float32_list(x: torch.Tensor) -> list:
    """Nested lists of floats, each the shortest decimal that reads back as the same float32 value (numpy's str of
    a float32), so JSON holds the trace's numbers exactly and no longer than needed."""
    values = x.float().numpy()
    return np.array([float(str(v)) for v in values.ravel()]).reshape(values.shape).tolist()


def scale_record(step: ScaleStep, b: int, contribution_hw3: np.ndarray, image_hw3: np.ndarray) -> dict:
    """What the page shows of one scale of batch item ``b``: side, sequence positions, guidance, the token map
    (h, w), the chosen tokens' probabilities (h, w), the candidates (tokens and probabilities, (h, w, 5)) and the
    contribution and image panels as PNG data: URIs."""
    tokens_Bhwk, probs_Bhwk = step.candidates(TOP_CANDIDATES)
    return {"scale": step.scale, "pn": step.pn, "begin": step.begin, "end": step.end, "cfg": float(step.cfg),
            "tokens": step.tokens[b].tolist(), "chosen_prob": _float32_list(step.token_prob[b]),
            "candidates": {"tokens": tokens_Bhwk[b].tolist(), "probs": _float32_list(probs_Bhwk[b])},
            "contribution": _png_data_uri(contribution_hw3), "image": _png_data_uri(image_hw3)}


def nearest_codes(step: EncodeStep, codebook_VCv: torch.Tensor, b: int = 0,
                  k: int = TOP_CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
    """The k codebook entries nearest to each vector scale ``step`` quantized (its ``target``, the rest before it at
    side pn_k), nearest first: (tokens (h, w, k) int64, distances ||target - e_v|| (h, w, k) float32) of batch item
    ``b``. Distances are computed pairwise (not through the dot-product expansion the quantizer's argmin uses), so
    in a near tie the quantizer's token may sit second."""
    target_lCv = step.target[b].detach().float().cpu().flatten(1).T
    codebook_VCv = codebook_VCv.detach().float().cpu()
    d_lV = torch.cdist(target_lCv, codebook_VCv, compute_mode="donot_use_mm_for_euclid_dist")
    distances_lk, tokens_lk = d_lV.topk(min(k, d_lV.shape[1]), dim=1, largest=False)
    shape = (step.pn, step.pn, tokens_lk.shape[1])
    return tokens_lk.view(shape), distances_lk.view(shape)


def encoding_record(step: EncodeStep, b: int, codebook_VCv: torch.Tensor, contribution_hw3: np.ndarray,
                    rest_hw3: np.ndarray, image_hw3: np.ndarray) -> dict:
    """What the page shows of one scale of an encoding: side, the token map (h, w), the share of f still unexplained
    (``rest_norm``), the PSNR of the reconstruction so far (None without an input image), the nearest codebook
    entries (``nearest_codes``: tokens and distances, (h, w, 5)) and the contribution, rest and image panels as PNG
    data: URIs."""
    tokens_hwk, distances_hwk = nearest_codes(step, codebook_VCv, b)
    return {"scale": step.scale, "pn": step.pn, "tokens": step.tokens[b].tolist(),
            "rest_share": float(step.rest_norm[b]),
            "psnr": None if step.input_image is None else float(step.psnr()[b]),
            "candidates": {"tokens": tokens_hwk.tolist(), "distances": _float32_list(distances_hwk)},
            "contribution": _png_data_uri(contribution_hw3), "rest": _png_data_uri(rest_hw3),
            "image": _png_data_uri(image_hw3)}


def page_kind(steps: Sequence) -> str:
    """"generation" (every step a ``ScaleStep``) or "encoding" (every step an ``EncodeStep``)."""
    for kind, record_type in (("generation", ScaleStep), ("encoding", EncodeStep)):
        if all(isinstance(step, record_type) for step in steps):
            return kind
    raise ValueError("the HTML step-through shows one generation (the steps of VAR.generate_steps) or one encoding "
                     "(the steps of VQVAE.encode_steps); got steps of neither, or of both")


def page_data(steps: Sequence, codebook_VCv: torch.Tensor, panels: Sequence, b: int = 0, title: str = "",
              frame_ms: int = 800, rests: Sequence | None = None) -> dict:
    """The page's JSON document. ``panels``: ``export.scale_panels(steps, codebook_VCv, b, px)``, one (tokens,
    contribution, image) triple of (px, px, 3) uint8 pictures per scale (the page draws the token map itself, as
    buttons, from the palette: ``codebook_colors`` in 8-bit hex); an encoding also needs ``rests``:
    ``export.rest_panels(steps, b, px)``, one (px, px, 3) picture per scale."""
    kind = page_kind(steps)
    if len(panels) != len(steps):
        raise ValueError(f"{len(panels)} panel triples for {len(steps)} steps: pass export.scale_panels(steps, ...)")
    document = {"kind": kind, "title": title, "frame_ms": frame_ms,
                "palette": [_hex(rgb) for rgb in codebook_colors(codebook_VCv)]}
    if kind == "generation":
        return {**document, "total_tokens": steps[0].total_tokens,
                "scales": [scale_record(step, b, contribution, image)
                           for step, (_, contribution, image) in zip(steps, panels)]}
    if rests is None or len(rests) != len(steps):
        raise ValueError("an encoding's page also shows the rest after each scale: pass rests="
                         "export.rest_panels(steps, b, px), one picture per step")
    return {**document, "scales": [encoding_record(step, b, codebook_VCv, contribution, rest, image)
                                   for step, (_, contribution, image), rest in zip(steps, panels, rests)]}


def step_through_html(steps: Sequence, codebook_VCv: torch.Tensor, panels: Sequence, b: int = 0, title: str = "",
                      frame_ms: int = 800, rests: Sequence | None = None) -> str:
    """The page as text: ``html_page.PAGE`` with ``page_data`` embedded as JSON (every "<" written as \\u003c, so no text in
    it can close the script element), the title escaped and the text of the page's kind (``html_page.PARTS``)."""
    if not steps:
        raise ValueError("no steps to export: pass the steps of a generation or an encoding (one per scale)")
    document = page_data(steps, codebook_VCv, panels, b, title, frame_ms, rests)
    data = json.dumps(document, separators=(",", ":"))
    parts = PARTS[document["kind"]]
    viridis = colormaps["viridis"]
    cividis = colormaps["cividis"]
    return PAGE.substitute(
        parts, title=html.escape(title or parts["default_title"]),
        data=data.replace("<", "\\u003c"),
        viridis=", ".join(_hex(viridis(i / 8)) for i in range(9)),
        seen=_hex(cividis(1.0)), masked=_hex(cividis(0.0)), accent=OKABE_ITO["orange"])
