"""The capstone's catalogue of named mistakes: when a piece does not reproduce the official numbers, its answers on a
few probe inputs are compared with what each typical mistake of that piece computes on the same inputs; a match
names the mistake (and how to fix it) instead of only the first differing number.

Every mistaken version is the library's computation on the reference weights (``varlite.core``'s quantizer and
sampling, parity-tested against the official code) changed in exactly one place. Dimension key: B batch, Cv latent
channels, H final latent side, l one scale's tokens, V vocabulary, K scales, si the 0-based scale (k = si + 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..core import sampling
from .compare import _Mismatch, _compare_list, _compare_tensor


@dataclass(frozen=True)
class CapstoneMistake:
    name: str                           # quoted in the verdict: "this is exactly what <name> gives"
    fn: Callable                        # (ref, *piece's arguments) -> what the mistaken piece returns
    advice: str


# ---------------------------------------------------------------------------------------------- phi_k
def _phi_with(ref, h_BCvHW: torch.Tensor, i: int, blend: bool = True) -> torch.Tensor:
    """phi with the i-th shared conv: (1 - ratio) h + ratio conv_i(h), or conv_i(h) alone without the blend."""
    conv = ref.vqvae.quantize.quant_resi.qresi_ls[i]
    out = F.conv2d(h_BCvHW, conv.weight, conv.bias, padding=1)
    return (1 - conv.ratio) * h_BCvHW + conv.ratio * out if blend else out


def _index_at(ref, position: float) -> int:
    """The conv whose tick is nearest to a relative position (the official rule, asked at another position)."""
    ticks = ref.vqvae.quantize.quant_resi.ticks
    return int(abs(ticks - position).argmin())


def _phi_variant(position: Callable[[int, int], float], blend: bool = True):
    def phi(ref, h_BCvHW, si, num_scales, W):
        return _phi_with(ref, h_BCvHW, _index_at(ref, position(si, num_scales)), blend)
    return phi


# ---------------------------------------------------------------------------------------------- encoding and f_hat
def _contribution(ref, idx_Bl, si: int, phi_first: bool = False, mode: str = "bicubic") -> torch.Tensor:
    """Scale si's contribution phi_k(up(e[r_k])) at side H, with the upsampling mode, or phi applied before it."""
    q = ref.vqvae.quantize
    pn, H = q.patch_nums[si], q.patch_nums[-1]
    h_BCvhw = q.lookup(idx_Bl, pn)
    if phi_first:
        h_BCvhw = q.phi(h_BCvhw, si)
    up_BCvHW = h_BCvhw if pn == H else F.interpolate(h_BCvhw, size=(H, H), mode=mode)
    return up_BCvHW if phi_first else q.phi(up_BCvHW, si)


def _encode_variant(ref, f_BCvHW, W, patch_nums, subtract: bool = True, **contribution):
    q, rest, maps = ref.vqvae.quantize, f_BCvHW.clone(), []
    for si, pn in enumerate(patch_nums):
        target_BCvhw = rest if pn == patch_nums[-1] else F.interpolate(rest, size=(pn, pn), mode="area")
        idx_Bl = q.nearest_code(target_BCvhw.permute(0, 2, 3, 1).reshape(-1, q.Cv)).view(len(f_BCvHW), -1)
        if subtract:
            rest = rest - _contribution(ref, idx_Bl, si, **contribution)
        maps.append(idx_Bl)
    return maps


def _var_input_variant(ref, token_maps, W, patch_nums, own_scale: bool = False, down: str = "area",
                       **contribution):
    f_hat, inputs = 0, []
    for si in range(len(patch_nums) - 1):
        f_hat = f_hat + _contribution(ref, token_maps[si], si, **contribution)
        seen = f_hat + _contribution(ref, token_maps[si + 1], si + 1, **contribution) if own_scale else f_hat
        x_BCvhw = F.interpolate(seen, size=(patch_nums[si + 1],) * 2, mode=down)
        inputs.append(x_BCvhw.flatten(2).transpose(1, 2))
    return torch.cat(inputs, dim=1)


# ---------------------------------------------------------------------------------------------- guidance
def _guided_variant(strength: Callable[[float, int, int], float], swapped: bool = False):
    def guided(ref, logits_2BlV, cfg, si, num_scales):
        B = len(logits_2BlV) // 2
        cond_BlV, uncond_BlV = logits_2BlV[:B], logits_2BlV[B:]
        if swapped:
            cond_BlV, uncond_BlV = uncond_BlV, cond_BlV
        t = strength(cfg, si, num_scales)
        return (1 + t) * cond_BlV - t * uncond_BlV
    return guided


MISTAKES: dict[str, list[CapstoneMistake]] = {
    "phi_of_scale": [
        CapstoneMistake("the relative position k / (K - 1) with the 1-based k (the conv one tick too far)",
                        _phi_variant(lambda si, K: (si + 1) / (K - 1)),
                        "Scale k = si + 1 sits at (k - 1) / (K - 1) = si / (K - 1): 0 for the first scale, 1 for "
                        "the last."),
        CapstoneMistake("the relative position si / K instead of si / (K - 1)",
                        _phi_variant(lambda si, K: si / K),
                        "Divide by K - 1, so that the last scale sits at 1."),
        CapstoneMistake("the convolution without the blend with the identity",
                        _phi_variant(lambda si, K: si / (K - 1), blend=False),
                        "phi(h) = (1 - 0.5) h + 0.5 conv(h): half the input plus half the convolution."),
    ],
    "encode_tokens": [
        CapstoneMistake("phi applied before upsampling (phi_k on the small map, then bicubic up)",
                        lambda ref, *a: _encode_variant(ref, *a, phi_first=True),
                        "Upsample e[r_k] to H x H first, then apply phi_k: the conv works at the full side."),
        CapstoneMistake("bilinear upsampling instead of bicubic",
                        lambda ref, *a: _encode_variant(ref, *a, mode="bilinear"),
                        "The official upsampling of a token map is bicubic."),
        CapstoneMistake("never subtracting what each scale explained (every scale quantizes f itself)",
                        lambda ref, *a: _encode_variant(ref, *a, subtract=False),
                        "After scale k, remove its contribution from the rest: the next scale quantizes what is left."),
    ],
    "var_input": [
        CapstoneMistake("each scale's input built from f_hat including its own tokens (the answer leaks in)",
                        lambda ref, *a: _var_input_variant(ref, *a, own_scale=True),
                        "The input of scale k + 1 is f_hat after scales 1..k only: its own tokens are what it must "
                        "predict."),
        CapstoneMistake("phi applied before upsampling (phi_k on the small map, then bicubic up)",
                        lambda ref, *a: _var_input_variant(ref, *a, phi_first=True),
                        "Upsample e[r_k] to H x H first, then apply phi_k."),
        CapstoneMistake("bilinear downsampling of f_hat instead of area averaging",
                        lambda ref, *a: _var_input_variant(ref, *a, down="bilinear"),
                        "The next scale sees f_hat area-averaged to its side (mode='area')."),
    ],
    "guided_logits": [
        CapstoneMistake("the guidance ramp reversed (strongest at the first scale)",
                        _guided_variant(lambda cfg, si, K: sampling.cfg_strength(cfg, K - 1 - si, K)),
                        "t grows with the scale: t_k = cfg * si / (K - 1), 0 at the first scale and cfg at the last."),
        CapstoneMistake("no guidance ramp (full strength cfg at every scale)",
                        _guided_variant(lambda cfg, si, K: cfg),
                        "The strength is ramped: t_k = cfg * si / (K - 1)."),
        CapstoneMistake("the ramp over (si + 1) / K",
                        _guided_variant(lambda cfg, si, K: cfg * (si + 1) / K),
                        "The ramp starts at 0 for the first scale: t_k = cfg * si / (K - 1)."),
        CapstoneMistake("conditional and unconditional rows swapped (guidance away from the class)",
                        _guided_variant(lambda cfg, si, K: sampling.cfg_strength(cfg, si, K), swapped=True),
                        "Rows [:B] are conditional, [B:] unconditional: (1 + t) cond - t uncond."),
    ],
}


def _probes(name: str, ref) -> list[tuple]:
    """The inputs a piece's answers are compared on (the reference set's own, as the check uses)."""
    K = len(ref.config["patch_nums"])
    if name == "phi_of_scale":
        H = ref.config["patch_nums"][-1]
        h_BCvHW = torch.randn((2, ref.config["Cv"], H, H), generator=torch.Generator().manual_seed(40))
        return [(h_BCvHW, si, K, ref.weights()) for si in range(K)]
    if name == "encode_tokens":
        return [(ref.arrays["f_encoded"], ref.weights(), ref.config["patch_nums"])]
    if name == "var_input":
        maps = [ref.arrays[f"idxBl.s{si}"] for si in range(K)]
        return [(maps, ref.weights(), ref.config["patch_nums"])]
    if name == "guided_logits":
        return [(ref.arrays[f"greedy.raw_logits.s{si}"], 1.5, si, K) for si in range(K)]
    return []


def _same(got, expected) -> bool:
    try:
        if isinstance(expected, list):
            _compare_list(got, expected, "", lambda k: "", atol=1e-5, rtol=1e-4)
        else:
            _compare_tensor(got, expected, "", atol=1e-5, rtol=1e-4)
    except _Mismatch:
        return False
    return True


def diagnose(name: str, fn: Callable, ref) -> CapstoneMistake | None:
    """The catalogued mistake of piece ``name`` whose answers equal ``fn``'s on every probe, or None. ``fn`` is the
    learner's function as the check calls it (library shortcuts disabled); an exception means no diagnosis."""
    mistakes = MISTAKES.get(name, [])
    if not mistakes:
        return None
    probes = _probes(name, ref)
    try:
        answers = [fn(*_fresh(args)) for args in probes]
    except Exception:       # the learner's function failed on a probe: the verdict already says where
        return None
    with torch.no_grad():
        for mistake in mistakes:
            if all(_same(got, mistake.fn(ref, *_fresh(args))) for got, args in zip(answers, probes)):
                return mistake
    return None


def _fresh(args: tuple) -> tuple:
    """Copies of the probe's tensors (a function that edits its input in place cannot spoil the next call)."""
    def copy(x):
        if isinstance(x, torch.Tensor):
            return x.clone()
        if isinstance(x, dict):
            return {k: copy(v) for k, v in x.items()}
        if isinstance(x, list):
            return [copy(v) for v in x]
        return x
    return tuple(copy(a) for a in args)
