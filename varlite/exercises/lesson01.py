"""Checks of lesson 1 -- images as tokens: nearest-code search and codebook lookup."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.quantizer import MultiScaleQuantizer
from ._check import CheckResult, Shortcut, _Case, _Mistake, _compare_tensor, _gen, _quantizer, _run, exercise

exercise("nearest_code", "1.1",
         concept="A token is the index of the codebook vector *closest* to z in Euclidean distance: compare every row "
                 "of z with every codebook vector and keep the index of the smallest distance.",
         approach="Build the (N, V) matrix of squared distances in one go (broadcast z_NCv[:, None, :] against "
                  "codebook_VCv[None], or expand ||z - e||^2 = ||z||^2 + ||e||^2 - 2 z.e with one matrix product), "
                  "then reduce over the V axis.",
         code="d_NV = z.square().sum(1, keepdim=True) + e.square().sum(1) - 2 * z @ e.T; return d_NV.argmin(dim=1)",
         shortcuts=[Shortcut(MultiScaleQuantizer, "nearest_code")])
exercise("lookup", "1.2",
         concept="Looking tokens up is indexing: row idx of the codebook is the vector of that token. The result must "
                 "be an image-like map, channels first, with token i at row i // side, column i % side.",
         approach="Index the codebook with the (B, l) index tensor (giving (B, l, Cv)), move the channel axis before "
                  "the token axis, then reshape the token axis into (side, side).",
         code="return codebook_VCv[idx_Bl].transpose(1, 2).reshape(idx_Bl.shape[0], codebook_VCv.shape[1], side, side)",
         shortcuts=[Shortcut(MultiScaleQuantizer, "lookup")])


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
    cases = [_Case(f"N={N} vectors, Cv={Cv}, V={V}", _codebook_case(s, N, Cv, V), hidden=hidden)
             for s, (N, Cv, V, hidden) in enumerate([(1, 2, 3, False), (50, 8, 64, False), (300, 32, 512, False),
                                                     (77, 5, 33, True), (129, 16, 1000, True)])]
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
                mistakes,
                success="This is line for line what the tokenizer does at every scale.", verbose=verbose)


def _lookup_case(seed: int, B: int, side: int, Cv: int, V: int):
    g = _gen(seed)
    return torch.randint(0, V, (B, side * side), generator=g), torch.randn(V, Cv, generator=g), side


def check_lookup(lookup, verbose: bool = True) -> CheckResult:
    """``lookup(idx_Bl, codebook_VCv, side) -> (B, Cv, side, side)``: the codebook vectors of a row-major token map,
    channels first. Reference: ``MultiScaleQuantizer.lookup``."""
    cases = [_Case(f"B={B}, {side}x{side} tokens, Cv={Cv}, V={V}", _lookup_case(s, B, side, Cv, V), hidden=hidden)
             for s, (B, side, Cv, V, hidden) in enumerate([(1, 1, 4, 5, False), (2, 3, 4, 16, False),
                                                           (3, 8, 32, 256, False), (4, 5, 7, 50, True)])]

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
                mistakes, verbose=verbose)
