"""Edits for the Edit page: one ``varlite.editing`` call per request, the result kept as images.

Bound: ``edit_result`` is ``st.cache_data`` with at most 32 results, each kept an hour at most.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import inputs
from app.models import load_model
from app.traces import GenSettings, finished_generation, to_uint8
from varlite import editing
from varlite.images import prepare_image

EDIT_OPS = {
    "inpaint": "In-painting: regenerate the box, keep the rest",
    "outpaint": "Out-painting: keep the box, regenerate around it",
    "class": "Class editing: regenerate the box as another class",
    "surgery": "Token surgery: paint tokens at one scale, regenerate the finer scales",
}
STRIP_MAX_IMAGE_SIZE = 64       # models up to this image size show every scale's image; larger ones the result only


@dataclass(frozen=True)
class EditRequest:
    """Everything an edit depends on (hashable: it keys the cache)."""
    model_key: str
    op: str
    box: tuple[float, float, float, float]          # y0, x0, y1, x1 as fractions of the image
    label: int                                      # class for the generated part (num_classes = unconditional)
    seed: int = 0
    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    surgery_scale: int = 0                          # si, 0-based
    surgery_token: int = 0
    source_settings: GenSettings | None = None      # the source is this generation ...
    source_image: bytes | None = None               # ... or this image
    source_name: str = ""


@dataclass
class EditOutcome:
    before: np.ndarray               # (S, S, 3) uint8: the source's tokens, decoded
    after: np.ndarray                # (S, S, 3) uint8
    steps: list[np.ndarray] | None   # every scale's image (small models only)
    keep: list[np.ndarray]           # per scale, (h, w) bool: True where the source's token was kept
    box: np.ndarray                  # (side, side) bool: the box on the grid it was applied to
    tokens: list[np.ndarray]         # per scale, (h, w): the result's tokens


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def edit_result(req: EditRequest) -> EditOutcome:
    """Run one edit with ``varlite.editing``: before / after images, the kept-token masks and the result's tokens."""
    model = load_model(req.model_key)
    var = model.var
    if req.source_settings is not None:
        source = [step.tokens.to(model.device) for step in finished_generation(req.source_settings).steps]
    else:
        image = prepare_image(inputs.read_image_bytes(req.source_image, req.source_name), model.image_size)[0]
        source = image.to(model.device)
    sampling = dict(cfg=float(req.cfg), top_k=int(req.top_k), top_p=float(req.top_p), seed=int(req.seed))
    H = var.patch_nums[-1]
    if req.op == "inpaint":
        res, box = editing.inpaint(var, source, editing.box_mask(H, *req.box), req.label, **sampling), H
    elif req.op == "outpaint":
        res, box = editing.outpaint(var, source, editing.box_mask(H, *req.box), req.label, **sampling), H
    elif req.op == "class":
        res, box = editing.edit_class(var, source, editing.box_mask(H, *req.box), req.label, **sampling), H
    elif req.op == "surgery":
        res = editing.paint_tokens(var, source, req.surgery_scale, req.box, req.surgery_token, req.label, **sampling)
        box = var.patch_nums[req.surgery_scale]
    else:
        raise ValueError(f"unknown edit {req.op!r}; choose one of {list(EDIT_OPS)}")
    with torch.inference_mode():
        steps = ([to_uint8(step.image().cpu())[0] for step in res.steps]
                 if model.image_size <= STRIP_MAX_IMAGE_SIZE else None)
        return EditOutcome(before=to_uint8(res.source_image().cpu())[0], after=to_uint8(res.image().cpu())[0],
                           steps=steps, keep=[m[0].cpu().numpy() for m in res.keep],
                           box=editing.box_mask(box, *req.box).numpy(), tokens=[t[0].cpu().numpy() for t in res.tokens])
