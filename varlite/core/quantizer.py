"""The multi-scale residual quantizer: how VAR turns one latent map into a pyramid of token maps.

Dimension key: B batch, Cv latent channels, H,W latent side (= last patch num), h,w one scale's side,
V vocabulary, l = h*w tokens of one scale, K scales.

Encoding (VAR paper, Algorithm 1). Start with the rest (what is left to explain) ``rest = f`` and ``f_hat = 0``.
For k = 1..K (si = k - 1 in the code):

    target_k = area_downsample(rest, pn_k)                   # what is still unexplained, seen at scale k
    r_k      = argmin_v ||target_k - e_v||^2                 # nearest codebook entry per position (tokens)
    z_k      = e[r_k]                                        # the looked-up vectors (the paper's z_k)
    c_k      = phi_k(bicubic_upsample(z_k, H))               # this scale's contribution at full size
    f_hat   += c_k ;  rest -= c_k

so that f_hat after all K scales approximates f, and f_hat after k scales is a coarse version of it.
The last scale already has side H, so it skips the down/upsampling. One codebook serves every scale.
Reconstruction (Algorithm 2) is the same sum from given tokens, f_hat = sum_k phi_k(up(e[r_k])) (``idx_to_f_hats``),
then image = D(f_hat) (``VQVAE.decode_f_hat``).

phi_k is a 3x3 conv blended with the identity: phi(x) = (1 - q) x + q conv(x), q = 0.5. Only 4 convs are
learned; scale si (0-based, of K) uses the conv whose "tick" is nearest to si/(K-1), ticks = linspace(1/12, 11/12, 4).
For K = 10 two scales fall exactly between ticks in real arithmetic; float64 rounding decides them, as upstream.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .configs import VQVAEConfig
from .trace import EncodeStep


class Phi(nn.Conv2d):
    """phi(x) = (1 - ratio) * x + ratio * conv3x3(x): a small learned correction of an upsampled token map."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, x_BCvHW: torch.Tensor) -> torch.Tensor:
        return x_BCvHW.mul(1 - self.ratio) + super().forward(x_BCvHW).mul_(self.ratio)


class PhiPartiallyShared(nn.Module):
    """n phi convs shared by K scales: scale si uses the conv whose tick is nearest to si / (K - 1)."""

    def __init__(self, convs: nn.ModuleList):
        super().__init__()
        self.qresi_ls = convs      # official parameter name: quantize.quant_resi.qresi_ls.<i>.weight
        n = len(convs)
        # upstream's rule, computed in float64 exactly as there (ties are decided by its rounding)
        self.ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)

    def index_for(self, si: int, num_scales: int) -> int:
        """Which of the n convs scale si (0-based, of num_scales) uses."""
        at = si / (num_scales - 1) if num_scales > 1 else 0.0
        return int(np.argmin(np.abs(self.ticks - at)))

    def forward(self, x_BCvHW: torch.Tensor, si: int, num_scales: int) -> torch.Tensor:
        return self.qresi_ls[self.index_for(si, num_scales)](x_BCvHW)


class MultiScaleQuantizer(nn.Module):
    """A codebook of V vectors (Cv dims) shared by K scales, and the phi convs. Official name: ``quantize``."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.vocab_size, self.Cv, self.patch_nums = config.vocab_size, config.z_channels, tuple(config.patch_nums)
        self.beta = config.beta
        self.quant_resi = PhiPartiallyShared(nn.ModuleList(
            [Phi(config.z_channels, config.quant_resi) for _ in range(config.share_quant_resi)]))
        # training statistic kept for checkpoint compatibility (how often each code was hit, per scale)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), config.vocab_size))
        self.embedding = nn.Embedding(config.vocab_size, config.z_channels)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def phi(self, x_BCvHW: torch.Tensor, si: int) -> torch.Tensor:
        """phi_k(x) for scale si: the shared conv this scale uses (``PhiPartiallyShared.index_for``)."""
        return self.quant_resi(x_BCvHW, si, self.num_scales)

    def nearest_code(self, z_NCv: torch.Tensor) -> torch.Tensor:
        """argmin_v ||z - e_v||^2 = argmin_v (||z||^2 + ||e_v||^2 - 2 z.e_v), computed as upstream does."""
        codebook_VCv = self.embedding.weight.data
        d_NV = torch.sum(z_NCv.square(), dim=1, keepdim=True) + torch.sum(codebook_VCv.square(), dim=1)
        d_NV.addmm_(z_NCv, codebook_VCv.T, alpha=-2, beta=1)
        return torch.argmin(d_NV, dim=1)

    def upsample_and_phi(self, emb_BCvhw: torch.Tensor, si: int) -> torch.Tensor:
        """Scale si's contribution phi_k(bicubic_upsample(e[r_k])), at the full latent side H (the last scale is
        already at side H)."""
        H = self.patch_nums[-1]
        emb_BCvHW = emb_BCvhw if si == self.num_scales - 1 else F.interpolate(emb_BCvhw, size=(H, H), mode="bicubic")
        return self.phi(emb_BCvHW, si)

    def lookup(self, idx_Bl: torch.Tensor, side: int) -> torch.Tensor:
        """Codebook vectors of a row-major token map: (B, l) -> (B, Cv, side, side)."""
        B = idx_Bl.shape[0]
        return self.embedding(idx_Bl).transpose(1, 2).reshape(B, self.Cv, side, side)

    # ---------------------------------------------------------------- encoding: f -> tokens per scale
    def residual_steps(self, f_BCvHW: torch.Tensor) -> Iterator[EncodeStep]:
        """Yield one ``EncodeStep`` per scale while quantizing f coarse to fine (Algorithm 1, the loop in the module
        docstring). The steps carry no image; ``VQVAE.encode_steps`` attaches one."""
        B, Cv, H, W = f_BCvHW.shape
        if (H, W) != (self.patch_nums[-1],) * 2:
            raise ValueError(f"latent is {H}x{W} but the last patch num is {self.patch_nums[-1]}")
        rest_BCvHW = f_BCvHW.detach().clone()
        f_hat_BCvHW = torch.zeros_like(rest_BCvHW)
        K = self.num_scales
        for si, pn in enumerate(self.patch_nums):
            target_BCvhw = F.interpolate(rest_BCvHW, size=(pn, pn), mode="area") if si != K - 1 else rest_BCvHW
            idx_Bhw = self.nearest_code(target_BCvhw.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, pn, pn)
            emb_BCvhw = self.embedding(idx_Bhw).permute(0, 3, 1, 2).contiguous()
            contribution_BCvHW = self.upsample_and_phi(emb_BCvhw, si)
            f_hat_BCvHW = f_hat_BCvHW + contribution_BCvHW
            rest_BCvHW = rest_BCvHW - contribution_BCvHW
            yield EncodeStep(scale=si, pn=pn, num_scales=K, vocab_size=self.vocab_size, target=target_BCvhw,
                             tokens=idx_Bhw, embedding=emb_BCvhw, contribution=contribution_BCvHW,
                             f_hat=f_hat_BCvHW, rest=rest_BCvHW)

    def f_to_idx_Bl(self, f_BCvHW: torch.Tensor) -> list[torch.Tensor]:
        """Token maps r_1..r_K, each (B, pn_k^2) in row-major order."""
        return [step.tokens.flatten(1) for step in self.residual_steps(f_BCvHW)]

    def f_to_f_hats(self, f_BCvHW: torch.Tensor) -> list[torch.Tensor]:
        """f_hat after every scale (cumulative), each (B, Cv, H, W)."""
        return [step.f_hat for step in self.residual_steps(f_BCvHW)]

    # ---------------------------------------------------------------- decoding: tokens -> f_hat
    def idx_to_f_hats(self, ms_idx_Bl: list[torch.Tensor]) -> list[torch.Tensor]:
        """f_hat after every prefix r_1..r_k of the given token maps (k = 1..len(ms_idx_Bl))."""
        f_hats, f_hat_BCvHW = [], None
        for si, idx_Bl in enumerate(ms_idx_Bl):
            contribution_BCvHW = self.upsample_and_phi(self.lookup(idx_Bl, self.patch_nums[si]), si)
            f_hat_BCvHW = contribution_BCvHW if f_hat_BCvHW is None else f_hat_BCvHW + contribution_BCvHW
            f_hats.append(f_hat_BCvHW)
        return f_hats

    # ---------------------------------------------------------------- VAR's input
    def input_for_scale(self, f_hat_BCvHW: torch.Tensor, si: int) -> torch.Tensor:
        """The input of scale si's tokens: f_hat (built from the coarser scales) area-downsampled to pn_si,
        as a row-major sequence (B, pn_si^2, Cv)."""
        B, pn = f_hat_BCvHW.shape[0], self.patch_nums[si]
        return F.interpolate(f_hat_BCvHW, size=(pn, pn), mode="area").view(B, self.Cv, -1).transpose(1, 2)

    def idx_to_var_input(self, ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input: for si = 1..K-1, f_hat after scales 0..si-1 seen at scale si (``input_for_scale``).

        Returns (B, L - pn_1^2, Cv): the inputs of every token except the first scale's (the class token).
        """
        B, H = ms_idx_Bl[0].shape[0], self.patch_nums[-1]
        f_hat_BCvHW = ms_idx_Bl[0].new_zeros(B, self.Cv, H, H, dtype=torch.float32)
        next_inputs = []
        for si in range(self.num_scales - 1):
            f_hat_BCvHW = f_hat_BCvHW + self.upsample_and_phi(self.lookup(ms_idx_Bl[si], self.patch_nums[si]), si)
            next_inputs.append(self.input_for_scale(f_hat_BCvHW, si + 1))
        return torch.cat(next_inputs, dim=1)

    # ---------------------------------------------------------------- training forward (straight-through)
    def forward(self, f_BCvHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Quantize for training. Returns (f_hat with a straight-through gradient, vq loss, tokens per scale).

        vq_loss = (1/K) sum_k [ beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2 ], f_hat_k = f_hat after k scales
        (commitment term for the encoder, codebook term for the codebook and phi). The decoder receives
        sg(f_hat) + f - sg(f): the value of f_hat with the gradient of f (straight-through estimator).
        """
        f_no_grad_BCvHW = f_BCvHW.detach()
        vq_loss, ms_idx_Bl = f_BCvHW.new_zeros(()), []
        for step in self.residual_steps(f_BCvHW):
            vq_loss = vq_loss + self.beta * F.mse_loss(step.f_hat.detach(), f_BCvHW) \
                + F.mse_loss(step.f_hat, f_no_grad_BCvHW)
            ms_idx_Bl.append(step.tokens.flatten(1))
        f_hat_st_BCvHW = (step.f_hat.detach() - f_no_grad_BCvHW) + f_BCvHW
        return f_hat_st_BCvHW, vq_loss / self.num_scales, ms_idx_Bl
