"""Evaluation metrics: PSNR, SSIM, codebook usage / perplexity per scale, per-scale cross-entropy and accuracy,
the Frechet distance between two sets of feature vectors.

Dimension key: B batch, 3 RGB, H,W image side, K scales, l tokens of one scale, L all tokens, V vocabulary.
Images passed to PSNR / SSIM are float in [0, 1] (data range 1).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def psnr(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]: 10 log10(1 / MSE) (capped at 100 dB for identical images)."""
    mse_B = (x_B3HW.float() - y_B3HW.float()).square().flatten(1).mean(1)
    return (10 * torch.log10(1 / mse_B.clamp_min(1e-10))).clamp_max(100.0)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) normalised Gaussian: w(i, j) = g(i) g(j), g(t) ~ exp(-(t - c)^2 / (2 sigma^2))."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-t.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) for images in [0, 1], averaged over channels and positions.

    With Gaussian-weighted local statistics (11x11, sigma 1.5, only windows fully inside the image):
        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
        C1 = (0.01 * 1)^2, C2 = (0.03 * 1)^2.
    """
    x, y = x_B3HW.double(), y_B3HW.double()
    C = x.shape[1]
    w = gaussian_window(window, sigma).to(x.device).expand(C, 1, window, window)

    def local_mean(t):
        return F.conv2d(t, w, groups=C)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x.square()
    var_y = local_mean(y * y) - mu_y.square()
    cov_xy = local_mean(x * y) - mu_x * mu_y
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov_xy + C2)) / ((mu_x.square() + mu_y.square() + C1) * (var_x + var_y + C2))
    return ssim_map.flatten(1).mean(1).float()


def codebook_stats(idx_per_scale: Sequence[torch.Tensor], vocab_size: int) -> list[dict[str, float]]:
    """For each scale's tokens (any shape): the fraction of the V codes used, and the perplexity exp(H(p)) of the
    code histogram p (V if all codes are equally frequent, 1 if one code is used)."""
    out = []
    for idx in idx_per_scale:
        counts_V = torch.bincount(idx.flatten().long().cpu(), minlength=vocab_size).double()
        p_V = counts_V / counts_V.sum()
        entropy = -(p_V[p_V > 0] * p_V[p_V > 0].log()).sum().item()
        out.append({"usage": float((counts_V > 0).double().mean()), "perplexity": math.exp(entropy)})
    return out


def per_scale_loss_acc(logits_BLV: torch.Tensor, target_BL: torch.Tensor, begin_ends: Sequence[tuple[int, int]],
                       label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token losses (B, L) = cross-entropy (with label smoothing), and per-scale mean loss (K,) and accuracy (K,)."""
    B, L, V = logits_BLV.shape
    loss_BL = F.cross_entropy(logits_BLV.reshape(-1, V).float(), target_BL.reshape(-1),
                              label_smoothing=label_smoothing, reduction="none").view(B, L)
    correct_BL = (logits_BLV.argmax(-1) == target_BL).float()
    loss_K = torch.stack([loss_BL[:, b:e].mean() for b, e in begin_ends])
    acc_K = torch.stack([correct_BL[:, b:e].mean() for b, e in begin_ends])
    return loss_BL, loss_K.detach(), acc_K


def scale_logs(prefix: str, loss_BL: torch.Tensor, loss_K: torch.Tensor, acc_K: torch.Tensor,
               begin_ends: Sequence[tuple[int, int]]) -> dict[str, float]:
    """The official trainer's summary (mean over all tokens, and the last scale: "tail") plus every scale."""
    b_last = begin_ends[-1][0]
    L = loss_BL.shape[1]
    weights_K = torch.tensor([(e - b) / L for b, e in begin_ends], device=acc_K.device)
    logs = {f"{prefix}loss": float(loss_BL.mean()), f"{prefix}loss_last": float(loss_BL[:, b_last:].mean()),
            f"{prefix}acc": float((acc_K * weights_K).sum()), f"{prefix}acc_last": float(acc_K[-1])}
    for k in range(len(begin_ends)):
        logs[f"{prefix}loss_s{k + 1}"] = float(loss_K[k])
        logs[f"{prefix}acc_s{k + 1}"] = float(acc_K[k])
    return logs


def frechet_distance(feat_a_ND: torch.Tensor, feat_b_MD: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of D-dim features (the FID formula, Heusel et al. 2017):

        FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of A S_b A), A = S_a^(1/2) (symmetric, so eigh is exact and
    stable); computed in float64."""
    a, b = feat_a_ND.double(), feat_b_MD.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two (N, D) feature sets with the same D and N >= 2; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, U = torch.linalg.eigh(cov_a)
    sqrt_a = (U * w.clamp_min(0).sqrt()) @ U.T
    tr_sqrt = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)
