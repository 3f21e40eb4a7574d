"""Checks of lesson 1 -- images as tokens: nearest-code search and codebook lookup."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._check import CheckResult, _Case, _Mistake, _compare_tensor, _run, _gen, _quantizer


def _codebook_case(seed: int, N: int, Cv: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, Cv) and a codebook (V, Cv) whose vectors have very different lengths (so a dot product is not enough)."""
    g = _gen(seed)
    codebook = torch.randn(V, Cv, generator=g) * torch.linspace(0.2, 3.0, V).view(-1, 1)
    codebook = codebook[torch.randperm(V, generator=g)]
    z = torch.randn(N, Cv, generator=g)
    return z, codebook


def _nearest_code_reference(z_NCv, codebook_VCv):
    return _quantizer(codebook_VCv.shape[0], codebook_VCv.shape[1], codebook_VCv=codebook_VCv).nearest_code(z_NCv)


def check_nearest_code(nearest_code, verbose: bool = True) -> CheckResult:
    """``nearest_code(z_NCv, codebook_VCv) -> idx_N`` (int64): for every row of z, the index v of the codebook
    vector e_v with the smallest squared distance ||z - e_v||^2. Reference: ``MultiScaleQuantizer.nearest_code``."""
    cases = [_Case(f"N={N} vectors, Cv={Cv}, V={V}", _codebook_case(s, N, Cv, V))
             for s, (N, Cv, V) in enumerate([(1, 2, 3), (50, 8, 64), (300, 32, 512)])]
    mistakes = [
        _Mistake("argmax instead of argmin (the *farthest* codebook vector)",
                 lambda z, e: torch.cdist(z, e).argmax(dim=1),
                 "The token is the codebook entry at the *smallest* distance: torch.argmin(d, dim=1)."),
        _Mistake("the largest dot product z . e_v (without the ||e_v||^2 term)",
                 lambda z, e: (z @ e.T).argmax(dim=1),
                 "||z - e||^2 = ||z||^2 + ||e||^2 - 2 z.e: the ||e_v||^2 term differs between codebook vectors, so "
                 "the best dot product is not the nearest vector when the vectors have different lengths."),
        _Mistake("the largest cosine similarity",
                 lambda z, e: (F.normalize(z, dim=1) @ F.normalize(e, dim=1).T).argmax(dim=1),
                 "Cosine similarity ignores length; VQ uses the Euclidean distance."),
    ]
    return _run("nearest_code", nearest_code, _nearest_code_reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the indices", names=("row",),
                                                 kind_hint="Return indices (argmin), not distances."),
                mistakes, hint="compute the (N, V) matrix of squared distances, then argmin over the V axis (dim=1).",
                success="This is line for line what the tokenizer does at every scale.", verbose=verbose)


def _lookup_case(seed: int, B: int, side: int, Cv: int, V: int):
    g = _gen(seed)
    return torch.randint(0, V, (B, side * side), generator=g), torch.randn(V, Cv, generator=g), side


def check_lookup(lookup, verbose: bool = True) -> CheckResult:
    """``lookup(idx_Bl, codebook_VCv, side) -> (B, Cv, side, side)``: the codebook vectors of a row-major token map,
    channels first. Reference: ``MultiScaleQuantizer.lookup``."""
    cases = [_Case(f"B={B}, {side}x{side} tokens, Cv={Cv}, V={V}", _lookup_case(s, B, side, Cv, V))
             for s, (B, side, Cv, V) in enumerate([(1, 1, 4, 5), (2, 3, 4, 16), (3, 8, 32, 256)])]

    def reference(idx_Bl, codebook_VCv, side):
        return _quantizer(codebook_VCv.shape[0], codebook_VCv.shape[1], codebook_VCv=codebook_VCv).lookup(idx_Bl, side)

    mistakes = [
        _Mistake("reshaping (B, l, Cv) straight to (B, Cv, h, w) without moving the channel axis",
                 lambda idx, e, side: e[idx].reshape(idx.shape[0], e.shape[1], side, side),
                 "e[idx] is (B, l, Cv): the channels are last. Move them first (.transpose(1, 2) or .permute(0, 2, 1)) "
                 "and only then reshape to (B, Cv, side, side)."),
        _Mistake("column-major order (rows and columns swapped)",
                 lambda idx, e, side: e[idx].transpose(1, 2).reshape(idx.shape[0], e.shape[1], side, side).transpose(2, 3),
                 "Token i of a scale sits at row i // side, column i % side (row-major, as tensors are flattened)."),
    ]
    return _run("lookup", lookup, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the vectors", atol=1e-6, names=("b", "channel", "row", "col")),
                mistakes, hint="index the codebook with the tokens, then put the channel axis before the spatial ones.",
                verbose=verbose)
