"""Plain records of one scale of generation: what the model saw, chose and added. No model maths lives here.

Dimension key: B batch, h,w this scale's side, H,W final latent side, Cv latent channels, V vocabulary,
l = h*w tokens of this scale, L all tokens, Lk tokens visible to this scale (all coarser scales and itself),
k top-k candidates, nH heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class ScaleStep:
    """One scale of next-scale prediction, as yielded by ``VAR.generate_steps`` (tensors on the CPU when traced).

    ``logits`` are the guided logits the sampler saw (before top-k/top-p); ``probs``-style fields (``token_prob``,
    ``entropy``, ``topk_*``) describe softmax(logits), the model's guided distribution before filtering, and are
    None unless the generation was traced.
    """
    scale: int                      # k, 0-based
    side: int                       # pn_k (the token map is side x side)
    num_scales: int                 # K
    cfg: float                      # guidance strength t_k actually used at this scale
    tokens: torch.Tensor            # (B, h, w) int64: the chosen token map r_k
    embedding: torch.Tensor         # (B, Cv, h, w): codebook vectors of the chosen tokens (Gumbel mix if smoothing)
    residual: torch.Tensor          # (B, Cv, H, W): phi_k(upsample(embedding)), what this scale adds to f_hat
    f_hat: torch.Tensor             # (B, Cv, H, W): f_hat after this scale
    logits: torch.Tensor            # (B, l, V): guided logits before filtering
    raw_logits: torch.Tensor        # (2B, l, V) with CFG (rows B.. unconditional), else (B, l, V)
    begin: int                      # this scale's tokens are positions [begin, end) of the L-token sequence
    end: int
    total_tokens: int               # L
    token_prob: torch.Tensor | None = None    # (B, h, w): probability of the chosen token
    entropy: torch.Tensor | None = None       # (B, h, w): entropy of the distribution, in nats
    topk_tokens: torch.Tensor | None = None   # (B, h, w, k): the k most likely tokens
    topk_probs: torch.Tensor | None = None    # (B, h, w, k): their probabilities
    attention: list[torch.Tensor] | None = None  # per layer, (B, nH, l, Lk): this scale's queries (conditional rows)
    timings: dict[str, float] = field(default_factory=dict)   # seconds: transformer, sampling, quantizer (+ trace)
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    _image: torch.Tensor | None = field(default=None, repr=False)

    def mask_rows(self) -> torch.Tensor:
        """(l, L) bool: row i says which of the L tokens this scale's i-th token may attend to (block-causal).

        A token sees every token of its own scale and of all coarser scales: positions [0, end).
        """
        rows = torch.zeros(self.end - self.begin, self.total_tokens, dtype=torch.bool)
        rows[:, :self.end] = True
        return rows

    def image(self) -> torch.Tensor:
        """The image decoded from f_hat so far, (B, 3, Hi, Wi) in [0, 1]; decoded on first use, then kept."""
        if self._image is None:
            if self.decoder is None:
                raise RuntimeError("this step has no decoder attached")
            self._image = self.decoder(self.f_hat)
        return self._image


@dataclass
class EncodeStep:
    """One scale of multi-scale residual quantization of a real image, as yielded by ``VQVAE.encode_steps``.

    Field names match ``ScaleStep`` where the meaning is the same (``tokens``, ``embedding``, ``residual``,
    ``f_hat``). Images are in [0, 1].
    """
    scale: int
    side: int
    num_scales: int
    target: torch.Tensor            # (B, Cv, h, w): the residual still unexplained, area-downsampled to this scale
    tokens: torch.Tensor            # (B, h, w): nearest codebook entry of every target vector
    embedding: torch.Tensor         # (B, Cv, h, w): the quantized vectors e[tokens]
    residual: torch.Tensor          # (B, Cv, H, W): phi_k(upsample(embedding)), this scale's contribution
    f_hat: torch.Tensor             # (B, Cv, H, W): f_hat after this scale
    remaining: torch.Tensor         # (B, Cv, H, W): f - f_hat, left for the finer scales
    remaining_norm: torch.Tensor    # (B,): ||f - f_hat|| / ||f|| (relative, 1.0 before the first scale)
    codes_used: int                 # distinct codebook entries used at this scale (whole batch)
    vocab_size: int
    input_image: torch.Tensor = field(repr=False)   # (B, 3, Hi, Wi) in [0, 1]
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    _image: torch.Tensor | None = field(default=None, repr=False)

    def image(self) -> torch.Tensor:
        """The image decoded from this prefix of scales, (B, 3, Hi, Wi) in [0, 1]; decoded once, on first use."""
        if self._image is None:
            self._image = self.decoder(self.f_hat)
        return self._image

    def psnr(self) -> torch.Tensor:
        """(B,) PSNR in dB of the decoded prefix against the input: 10 log10(1 / MSE) for images in [0, 1]."""
        mse_B = (self.image() - self.input_image).square().flatten(1).mean(1)
        return 10 * torch.log10(1.0 / mse_B.clamp_min(1e-12))
