"""Records of one scale: what generation saw, chose and added (``ScaleStep``), what encoding found (``EncodeStep``).

``VAR.generate_steps`` yields a ``ScaleStep`` per scale (next-scale prediction) and
``MultiScaleQuantizer.residual_steps`` / ``VQVAE.encode_steps`` an ``EncodeStep`` per scale (the VQVAE encoding of
the paper's Algorithm 1). The
records hold the loop's own tensors; everything a view derives from them -- probabilities, entropy, top-k
candidates, the share of f left unexplained, PSNR -- is computed here, on demand, from those tensors. The model's
maths stays in var.py and quantizer.py. ``step.detached()`` is the same record on the CPU, with its image decoded
and no reference to a model: what an app caches and ``varlite.viz`` draws.

Scales: ``scale`` is the 0-based index si of the code; the paper's (and the figures') "scale k" is k = si + 1.
Vocabulary: a scale's **contribution** is phi_k(upsample(e[r_k])), what it adds to f_hat; the **rest** is
f - f_hat, what is left to explain.

Dimension key: B batch, h,w this scale's side, H,W final latent side, Cv latent channels, V vocabulary,
l = h*w tokens of this scale, L all tokens, Lk tokens visible to this scale (all coarser scales and itself),
k top-k candidates, nH heads, Hi,Wi image side.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

NUM_CANDIDATES = 5      # how many most likely tokens ``ScaleStep.candidates`` gives by default


class Laps:
    """Wall time per part of a loop body: ``laps.lap("sampling")`` adds the seconds since the previous lap (or since
    the clock was made) to ``laps.seconds["sampling"]``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - self.last
        self.last = now


def _to_cpu(x):
    """A tensor (or a list of tensors) detached from autograd and moved to the CPU; anything else unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, list):
        return [_to_cpu(item) for item in x]
    return x


def _decoded_once(step) -> torch.Tensor:
    """The step's image, decoded from its f_hat on first use and then kept (a detached step carries it already)."""
    if step._image is None:
        if step.decoder is None:
            raise RuntimeError("this step has no decoder attached (detached with decode=False, or made by hand): "
                               "decode its f_hat with VQVAE.decode_f_hat")
        step._image = step.decoder(step.f_hat)
    return step._image


def _detached(step, decode: bool):
    """The record with every tensor on the CPU and out of autograd, no decoder, and (if ``decode``) its image."""
    image = _decoded_once(step) if decode else step._image
    values = {f.name: _to_cpu(getattr(step, f.name)) for f in dataclasses.fields(step)}
    return dataclasses.replace(step, **{**values, "decoder": None, "_image": _to_cpu(image)})


@dataclass
class ScaleStep:
    """One scale of next-scale prediction, as yielded by ``VAR.generate_steps``.

    Tensors are on the model's device while generating, on the CPU after ``detached()``. ``logits`` are the guided
    logits the sampler saw, before top-k / top-p filtering; ``probs``, ``token_prob``, ``entropy`` and
    ``candidates(k)`` describe softmax(logits), the model's guided distribution, and are computed from them on use.
    """
    scale: int                      # si, 0-based (the paper's k = si + 1)
    pn: int                         # pn_k, the side of this scale's token map (pn x pn)
    num_scales: int                 # K
    cfg: float | list[float]        # guidance strength t_k used at this scale (one per row when rows differ)
    tokens: torch.Tensor            # (B, h, w) int64: the chosen token map r_k
    embedding: torch.Tensor         # (B, Cv, h, w) float: codebook vectors of the tokens (a Gumbel mix if smoothing)
    contribution: torch.Tensor      # (B, Cv, H, W) float: phi_k(upsample(embedding)), what this scale adds to f_hat
    f_hat: torch.Tensor             # (B, Cv, H, W) float: f_hat after this scale
    logits: torch.Tensor            # (B, l, V) float: guided logits, before filtering
    raw_logits: torch.Tensor        # (2B, l, V) float: the transformer's logits, rows B.. unconditional
    begin: int                      # this scale's tokens are positions [begin, end) of the L-token sequence
    end: int
    total_tokens: int               # L
    attention: list[torch.Tensor] | None = None   # per layer (B, nH, q, Lk) float: the captured queries (q = l, or the
                                                  # chosen ones), conditional
    timings: dict[str, float] = field(default_factory=dict)   # seconds: transformer, sampling, quantizer
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    _image: torch.Tensor | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ the sampler's distribution, on demand
    @property
    def probs(self) -> torch.Tensor:
        """(B, l, V): softmax(logits), the guided distribution of every position."""
        return self.logits.softmax(dim=-1)

    @property
    def token_prob(self) -> torch.Tensor:
        """(B, h, w): the probability of the chosen token, p(r_k[i] | ...)."""
        B = self.tokens.shape[0]
        return self.probs.gather(-1, self.tokens.view(B, -1, 1)).view(B, self.pn, self.pn)

    @property
    def entropy(self) -> torch.Tensor:
        """(B, h, w): entropy -sum_v p_v log p_v of every position's distribution, in nats (0 .. log V)."""
        logp_BlV = self.logits.log_softmax(dim=-1)
        entropy_Bl = -(logp_BlV.exp() * logp_BlV).nan_to_num_(0.0).sum(dim=-1)
        return entropy_Bl.view(-1, self.pn, self.pn)

    def candidates(self, k: int = NUM_CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most likely tokens of every position and their probabilities, most likely first:
        (tokens (B, h, w, k) int64, probs (B, h, w, k) float); k is capped at V."""
        probs_Blk, tokens_Blk = self.probs.topk(min(k, self.logits.shape[-1]), dim=-1)
        shape = (-1, self.pn, self.pn, probs_Blk.shape[-1])
        return tokens_Blk.view(shape), probs_Blk.view(shape)

    # ------------------------------------------------------------------ structure and pictures
    def mask_rows(self) -> torch.Tensor:
        """(l, L) bool: row i says which of the L tokens this scale's i-th token may attend to (block-causal).

        A token sees every token of its own scale and of all coarser scales: positions [0, end).
        """
        rows = torch.zeros(self.end - self.begin, self.total_tokens, dtype=torch.bool)
        rows[:, :self.end] = True
        return rows

    def image(self) -> torch.Tensor:
        """The image decoded from f_hat so far, (B, 3, Hi, Wi) float in [0, 1]; decoded on first use, then kept."""
        return _decoded_once(self)

    def row(self, b: int) -> ScaleStep:
        """Row b of a batched step as a step of its own (batch 1): what a solo generation with that row's label and
        settings yields (the attention and the conditional / unconditional logits of that row; its image if decoded).
        A scheduler that runs several requests as one batch hands each its rows this way; the row's tensors are
        copies, so the batch's can be freed."""
        B = self.tokens.shape[0]
        if not 0 <= b < B:
            raise IndexError(f"row {b} does not exist: this step has {B} rows")
        def one(x: torch.Tensor) -> torch.Tensor:       # a copy: the batch's tensors can be freed
            return x[b:b + 1].clone()
        return dataclasses.replace(
            self, tokens=one(self.tokens), embedding=one(self.embedding), contribution=one(self.contribution),
            f_hat=one(self.f_hat), logits=one(self.logits), raw_logits=self.raw_logits[[b, B + b]],
            cfg=self.cfg[b] if isinstance(self.cfg, (list, tuple)) else self.cfg,
            attention=None if self.attention is None else [one(weights) for weights in self.attention],
            _image=None if self._image is None else one(self._image))

    def detached(self, decode: bool = True) -> ScaleStep:
        """This step on the CPU, out of autograd, with no reference to the model (``decoder`` is None): safe to cache,
        pickle and hand to another thread. Every method works on it as on the live step; ``image()`` only if
        ``decode`` (the image is decoded now; with decode=False, and not decoded before, decode ``f_hat`` yourself
        with ``VQVAE.decode_f_hat`` when it is shown)."""
        return _detached(self, decode)


@dataclass
class EncodeStep:
    """One scale of multi-scale residual quantization (Algorithm 1), as yielded by
    ``MultiScaleQuantizer.residual_steps`` (no image) and ``VQVAE.encode_steps`` (with the input image and a
    decoder). Field names match ``ScaleStep`` where the meaning is the same. Images are in [0, 1].
    """
    scale: int                      # si, 0-based (the paper's k = si + 1)
    pn: int                         # pn_k, the side of this scale's token map
    num_scales: int                 # K
    vocab_size: int                 # V
    target: torch.Tensor            # (B, Cv, h, w) float: the rest before this scale at side pn_k (what r_k quantizes)
    tokens: torch.Tensor            # (B, h, w) int64: nearest codebook entry of every target vector (r_k)
    embedding: torch.Tensor         # (B, Cv, h, w) float: the quantized vectors e[tokens]
    contribution: torch.Tensor      # (B, Cv, H, W) float: phi_k(upsample(embedding)), what this scale adds to f_hat
    f_hat: torch.Tensor             # (B, Cv, H, W) float: f_hat after this scale
    rest: torch.Tensor              # (B, Cv, H, W) float: f - f_hat, left for the finer scales
    input_image: torch.Tensor | None = field(default=None, repr=False)   # (B, 3, Hi, Wi) in [0, 1]
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    _image: torch.Tensor | None = field(default=None, repr=False)

    @property
    def rest_norm(self) -> torch.Tensor:
        """(B,): ||f - f_hat|| / ||f||, the share of f still unexplained (f = f_hat + rest)."""
        f_norm_B = (self.f_hat + self.rest).flatten(1).norm(dim=1).clamp_min(1e-12)
        return self.rest.flatten(1).norm(dim=1) / f_norm_B

    @property
    def codes_used(self) -> int:
        """Distinct codebook entries used at this scale (whole batch)."""
        return int(self.tokens.unique().numel())

    def image(self) -> torch.Tensor:
        """The image decoded from this prefix of scales, (B, 3, Hi, Wi) float in [0, 1]; decoded once, on first use."""
        return _decoded_once(self)

    def psnr(self) -> torch.Tensor:
        """(B,) PSNR in dB of the decoded prefix against the input: 10 log10(1 / MSE) for images in [0, 1]."""
        if self.input_image is None:
            raise RuntimeError("this step has no input image (it comes from the quantizer alone: use "
                               "VQVAE.encode_steps, which attaches the image)")
        mse_B = (self.image() - self.input_image).square().flatten(1).mean(1)
        return 10 * torch.log10(1.0 / mse_B.clamp_min(1e-12))

    def detached(self, decode: bool = True) -> EncodeStep:
        """This step on the CPU, out of autograd, with no reference to the model; its image decoded if ``decode``."""
        return _detached(self, decode)
