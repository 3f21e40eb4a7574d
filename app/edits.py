"""Edits for the Edit page: one ``varlite.editing`` call per request, the result kept as images.

A region is a box ``(y0, x0, y1, x1)`` (fractions of the image: the rectangle preset) or a ``frozenset`` of
(row, col) cells painted on a grid: the final token grid for the mask edits, scale ``surgery_scale``'s grid for
token surgery (``region_mask``).

Bounds: ``edit_result`` is ``st.cache_data`` with at most 32 results, ``source_tokens`` and ``scale_prediction``
at most 16 and 64 entries; each is kept an hour at most.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import inputs
from app.loaders import load_model
from app.traces import GenSettings, finished_generation, to_uint8
from varlite import editing

EDIT_OPS = {
    "inpaint": "In-painting: regenerate the region, keep the rest",
    "outpaint": "Out-painting: keep the region, regenerate around it",
    "class": "Class editing: regenerate the region as another class",
    "surgery": "Token surgery: replace tokens of one scale, regenerate the finer scales",
}
STRIP_MAX_IMAGE_SIZE = 64       # models up to this image size show every scale's image; larger ones the result only
CANDIDATES = 8                  # token surgery offers this many of the model's most likely tokens

Region = tuple[float, float, float, float] | frozenset


def region_mask(region: Region, side: int) -> np.ndarray:
    """(side, side) bool: the cells of a region on a side x side grid (a box by ``editing.box_mask``'s rule)."""
    if isinstance(region, frozenset):
        mask = np.zeros((side, side), bool)
        for row, col in region:
            mask[row, col] = True
        return mask
    return editing.box_mask(side, *region).numpy()


@dataclass(frozen=True)
class EditSource:
    """The image to edit: a generation (its settings) or image bytes (a sample or an upload)."""
    settings: GenSettings | None = None
    image: bytes | None = None
    name: str = ""


@dataclass(frozen=True)
class EditRequest:
    """Everything an edit depends on (hashable: it keys the cache)."""
    model_key: str
    op: str
    region: Region                                  # see the module docstring
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

    @property
    def source(self) -> EditSource:
        return EditSource(self.source_settings, self.source_image, self.source_name)


@dataclass
class EditOutcome:
    before: np.ndarray               # (S, S, 3) uint8: the source's tokens, decoded
    after: np.ndarray                # (S, S, 3) uint8
    steps: list[np.ndarray] | None   # every scale's image (small models only)
    keep: list[np.ndarray]           # per scale, (h, w) bool: True where the source's token was kept
    region: np.ndarray               # (side, side) bool: the region on the grid it was applied to
    tokens: list[np.ndarray]         # per scale, (h, w): the result's tokens


@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def source_tokens(model_key: str, source: EditSource) -> list[torch.Tensor]:
    """The source's K token maps (1, h, w): the generation's tokens, or the image's (``editing.image_tokens``)."""
    model = load_model(model_key)
    if source.settings is not None:
        return [step.tokens for step in finished_generation(source.settings).steps]
    image = inputs.model_image(source.image, source.name, model.image_size).tensor()
    return [t.cpu() for t in editing.image_tokens(model.vqvae, image.to(model.device))]


def source_picture(model_key: str, source: EditSource) -> np.ndarray:
    """(S, S, 3) uint8: what the source looks like (the generated image, or the image as the model sees it)."""
    model = load_model(model_key)
    if source.settings is not None:
        run = finished_generation(source.settings)
        return run.image(len(run.steps) - 1, model)
    return inputs.model_image(source.image, source.name, model.image_size).u8_HW3


@dataclass
class ScalePrediction:
    tokens: np.ndarray               # (h, w): the source's tokens of the scale
    probability: np.ndarray          # (h, w): the model's probability of each of them
    entropy: np.ndarray              # (h, w): the entropy of each position's distribution (nats)
    candidates: np.ndarray           # (h, w, CANDIDATES): the most likely tokens, most likely first
    candidate_probs: np.ndarray      # (h, w, CANDIDATES)


@st.cache_data(show_spinner="Asking the model for its candidates...", max_entries=64, ttl=3600)
def scale_prediction(model_key: str, source: EditSource, si: int, label: int, cfg: float, top_k: int, top_p: float,
                     seed: int) -> ScalePrediction:
    """``editing.predict_scale``: what the model predicts at every position of scale ``si`` given the source's
    coarser scales (with the edit's class and guidance), and how likely it finds the source's own tokens."""
    model = load_model(model_key)
    tokens = [t.to(model.device) for t in source_tokens(model_key, source)]
    step = editing.predict_scale(model.var, tokens, si, label, cfg=float(cfg), top_k=int(top_k), top_p=float(top_p),
                                 seed=int(seed)).detached(decode=False)
    source_hw = tokens[si][0].cpu()
    probs_hwV = step.probs[0].view(step.pn, step.pn, -1)
    cand_tokens, cand_probs = step.candidates(CANDIDATES)
    return ScalePrediction(source_hw.numpy(), probs_hwV.gather(-1, source_hw.unsqueeze(-1))[..., 0].numpy(),
                           step.entropy[0].numpy(), cand_tokens[0].numpy(), cand_probs[0].numpy())


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def edit_result(req: EditRequest) -> EditOutcome:
    """Run one edit with ``varlite.editing``: before / after images, the kept-token masks and the result's tokens."""
    model = load_model(req.model_key)
    var = model.var
    source = [t.to(model.device) for t in source_tokens(req.model_key, req.source)]
    sampling = dict(cfg=float(req.cfg), top_k=int(req.top_k), top_p=float(req.top_p), seed=int(req.seed))
    side = var.patch_nums[req.surgery_scale] if req.op == "surgery" else var.patch_nums[-1]
    region = torch.from_numpy(region_mask(req.region, side))
    if req.op == "inpaint":
        res = editing.inpaint(var, source, region, req.label, **sampling)
    elif req.op == "outpaint":
        res = editing.outpaint(var, source, region, req.label, **sampling)
    elif req.op == "class":
        res = editing.edit_class(var, source, region, req.label, **sampling)
    elif req.op == "surgery":
        res = editing.replace_tokens(var, source, req.surgery_scale, region, req.surgery_token, req.label, **sampling)
    else:
        raise ValueError(f"unknown edit {req.op!r}; choose one of {list(EDIT_OPS)}")
    with torch.inference_mode():
        steps = ([to_uint8(step.image().cpu())[0] for step in res.steps]
                 if model.image_size <= STRIP_MAX_IMAGE_SIZE else None)
        return EditOutcome(before=to_uint8(res.source_image().cpu())[0], after=to_uint8(res.image().cpu())[0],
                           steps=steps, keep=[m[0].cpu().numpy() for m in res.keep], region=region.numpy(),
                           tokens=[t[0].cpu().numpy() for t in res.tokens])
