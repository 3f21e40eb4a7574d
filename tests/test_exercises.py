"""Exercise checks (varlite.exercises): every reference solution in lessons/solutions passes its check, an untouched
stub is reported as "not attempted" (so an unsolved notebook runs on), and typical mistakes -- written here the way a
learner would write them -- fail with the diagnosis meant for them."""
from __future__ import annotations

import importlib
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varlite import exercises as ex

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
sys.path.insert(0, str(LESSONS))                 # lessons/solutions is a package inside lessons/, not installed
try:
    SOLUTIONS = {n: importlib.import_module(f"solutions.lesson{n:02d}") for n in range(1, 10)}
finally:
    sys.path.remove(str(LESSONS))


def solution_functions():
    """(lesson, name, function) for every exercise function of every solution module."""
    out = []
    for n, module in SOLUTIONS.items():
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__:
                out.append(pytest.param(n, name, fn, id=f"lesson{n:02d}.{name}"))
    return out


def sol(name):
    for module in SOLUTIONS.values():
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


def check(name, fn):
    return getattr(ex, f"check_{name}")(fn, verbose=False)


def assert_wrong(result, *phrases):
    assert result.status == "wrong", result.message
    for phrase in phrases:
        assert phrase in result.message, f"{phrase!r} not in:\n{result.message}"


# ------------------------------------------------------------------------------------------ every exercise
def test_every_check_has_a_solution_and_every_solution_a_check():
    checks = {name[len("check_"):] for name in ex.__all__ if name.startswith("check_")}
    solved = {p.values[1] for p in solution_functions()}
    assert checks == solved


@pytest.mark.parametrize("lesson,name,fn", solution_functions())
def test_reference_solution_passes(lesson, name, fn, capsys):
    result = getattr(ex, f"check_{name}")(fn)
    assert result.passed, result.message
    assert bool(result) and "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize("lesson,name,fn", solution_functions())
def test_stub_is_not_attempted_and_never_raises(lesson, name, fn):
    def stub(*args, **kwargs):
        raise NotImplementedError("write me")
    result = check(name, stub)
    assert result.status == "not attempted" and not result
    assert "NOT ATTEMPTED" in result.message and "NotImplementedError" in result.message


@pytest.mark.parametrize("lesson,name,fn", solution_functions())
def test_a_crashing_function_is_reported_with_its_line(lesson, name, fn):
    def broken(*args, **kwargs):
        return undefined_name + 1  # noqa: F821
    result = check(name, broken)
    assert result.status == "error"
    assert "NameError" in result.message and "undefined_name + 1" in result.message


@pytest.mark.parametrize("lesson,name,fn", solution_functions())
def test_passing_the_result_instead_of_the_function(lesson, name, fn):
    result = check(name, 42)
    assert result.status == "error" and "without calling it" in result.message


def test_returning_none_says_return_is_missing():
    def nearest_code(z, e):
        (torch.cdist(z, e)).argmin(1)
    assert_wrong(check("nearest_code", nearest_code), "forget the `return`")


def test_result_prints_once_and_displays_nothing(capsys):
    result = ex.check_cfg_mix(sol("cfg_mix"))
    assert capsys.readouterr().out.count("PASSED") == 1
    assert result._ipython_display_() is None


def test_learner_inputs_are_copies():
    """An in-place edit of the inputs cannot change the reference answer (the learner gets clones)."""
    def top_k_top_p(logits, k, p):
        out = sol("top_k_top_p")(logits.clone(), k, p)
        logits.zero_()                       # the learner's tensor, not the one the reference uses
        return out
    assert check("top_k_top_p", top_k_top_p).passed


def test_rel_error():
    assert ex.rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0
    assert math.isclose(ex.rel_error(1.0, 1.1), 0.1 / 2.1)


# ------------------------------------------------------------------------------------------ lesson 1
def test_nearest_code_mistakes():
    assert_wrong(check("nearest_code", lambda z, e: torch.cdist(z, e).argmax(dim=1)), "argmax instead of argmin")
    assert_wrong(check("nearest_code", lambda z, e: (z @ e.T).argmax(dim=1)), "dot product", "||e_v||^2")
    assert_wrong(check("nearest_code", lambda z, e: torch.cdist(z, e).argmin(dim=0)), "expected shape")
    assert_wrong(check("nearest_code", lambda z, e: torch.cdist(z, e).min(dim=1).values), "expected int values",
                 "not distances")


def test_lookup_mistakes():
    def no_transpose(idx, e, side):
        return e[idx].view(idx.shape[0], e.shape[1], side, side)
    assert_wrong(check("lookup", no_transpose), "without moving the channel axis")

    def column_major(idx, e, side):
        return e[idx].permute(0, 2, 1).reshape(idx.shape[0], -1, side, side).transpose(-1, -2)
    assert_wrong(check("lookup", column_major), "column-major")


# ------------------------------------------------------------------------------------------ lesson 2
def loop(f, q, update):
    """A learner's residual loop with a pluggable (wrong) residual update."""
    B, Cv, H, _ = f.shape
    rest, out = f.clone(), []
    for si, pn in enumerate(q.patch_nums):
        z = F.interpolate(rest, size=(pn, pn), mode="area")
        idx = q.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, -1)
        rest = update(rest, q, q.lookup(idx, pn), si, H)
        out.append(idx)
    return out


def test_residual_quantize_mistakes():
    assert_wrong(check("residual_quantize", lambda f, q: loop(f, q, lambda r, q, h, si, H: r)),
                 "never subtracting", "rest = rest - phi_k")
    assert_wrong(check("residual_quantize", lambda f, q: loop(
        f, q, lambda r, q, h, si, H: r - F.interpolate(h, size=(H, H), mode="bicubic"))), "without phi_k")

    def bilinear(f, q):
        B, Cv, H, _ = f.shape
        rest, out = f.clone(), []
        for si, pn in enumerate(q.patch_nums):
            z = F.interpolate(rest, size=(pn, pn), mode="bilinear")
            idx = q.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, -1)
            rest = rest - q.upsample_and_phi(q.lookup(idx, pn), si)
            out.append(idx)
        return out
    assert_wrong(check("residual_quantize", bilinear), "bilinear downsampling", "mode='area'")


def test_residual_quantize_names_the_first_wrong_scale():
    def wrong_last_scale(f, q):
        maps = sol("residual_quantize")(f, q)
        maps[-1] = (maps[-1] + 1) % 64
        return maps
    result = check("residual_quantize", wrong_last_scale)
    assert_wrong(result, "scale 5 (6x6)")


def test_phi_index_mistakes():
    ticks = np.linspace(1 / 12, 11 / 12, 4)
    assert_wrong(check("phi_index", lambda si, K: int(np.argmin(np.abs(ticks - si / K)))), "si / K instead of si / (K - 1)")
    assert_wrong(check("phi_index", lambda si, K: int(np.argmin(np.abs(np.linspace(0, 1, 4) - si / (K - 1))))),
                 "linspace(0, 1, 4)")

    def float32(si, K):
        return int((torch.linspace(1 / 12, 11 / 12, 4) - si / (K - 1)).abs().argmin())
    assert_wrong(check("phi_index", float32), "float32", "exactly half-way", "K=10")


# ------------------------------------------------------------------------------------------ lesson 3
def levels(pn):
    return torch.cat([torch.full((p * p,), k) for k, p in enumerate(pn)])


def test_scale_of_tokens_mistake():
    assert_wrong(check("scale_of_tokens", lambda pn: torch.cat([torch.full((p,), k) for k, p in enumerate(pn)])),
                 "pn_k tokens per scale instead of pn_k^2")


def test_block_causal_mask_mistakes():
    # off by one scale: < instead of <=
    assert_wrong(check("block_causal_mask", lambda pn: levels(pn)[None, :] < levels(pn)[:, None]), "Off by one scale")
    # query/key swapped
    assert_wrong(check("block_causal_mask", lambda pn: levels(pn)[:, None] <= levels(pn)[None, :]), "transposed")
    # next-token habit
    L = lambda pn: sum(p * p for p in pn)  # noqa: E731
    assert_wrong(check("block_causal_mask", lambda pn: torch.tril(torch.ones(L(pn), L(pn))).bool()), "token-by-token")
    # True = masked
    assert_wrong(check("block_causal_mask", lambda pn: levels(pn)[:, None] < levels(pn)[None, :]), "inverted")
    # the additive bias instead of a boolean mask
    bias = lambda pn: torch.where(levels(pn)[:, None] >= levels(pn)[None, :], 0.0, -math.inf)  # noqa: E731
    assert_wrong(check("block_causal_mask", bias), "expected bool values", "torch.where(mask, 0.0, -inf)")


def test_mask_message_names_query_and_key():
    result = check("block_causal_mask", lambda pn: levels(pn)[None, :] < levels(pn)[:, None])
    assert "first at query 0, key 0: expected True, got False" in result.message


# ------------------------------------------------------------------------------------------ lesson 4
def test_adaln_mistakes():
    def no_one(x, cond, ada_lin):
        scale, shift = ada_lin(cond).chunk(2, dim=-1)
        return F.layer_norm(x, x.shape[-1:], eps=1e-6) * scale[:, None] + shift[:, None]
    assert_wrong(check("adaln", no_one), "without the 1 +")

    def swapped(x, cond, ada_lin):
        shift, scale = ada_lin(cond).chunk(2, dim=-1)
        return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    assert_wrong(check("adaln", swapped), "scale and shift swapped")


def test_adaln_accepts_torch_default_layernorm_eps():
    def eps_1e5(x, cond, ada_lin):
        scale, shift = ada_lin(cond).chunk(2, dim=-1)
        return F.layer_norm(x, x.shape[-1:]) * (1 + scale[:, None]) + shift[:, None]
    assert check("adaln", eps_1e5).passed


def test_l2_attention_mistakes():
    def attention(q, k, s, bias, normalise=True, scale="learned", dim=-1):
        if normalise:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        t = {"learned": s.clamp_max(math.log(100)).exp(), "sqrt": q.shape[-1] ** -0.5, "noclamp": s.exp()}[scale]
        scores = t * q @ k.transpose(-1, -2)
        return (scores if bias is None else scores + bias).softmax(dim)
    assert check("l2_attention_weights", attention).passed
    assert_wrong(check("l2_attention_weights", lambda q, k, s, b: attention(q, k, s, b, normalise=False)),
                 "not L2-normalised")
    assert_wrong(check("l2_attention_weights", lambda q, k, s, b: attention(q, k, s, b, scale="sqrt")), "1/sqrt(c)")
    assert_wrong(check("l2_attention_weights", lambda q, k, s, b: attention(q, k, s, b, scale="noclamp")),
                 "without the clamp")
    assert_wrong(check("l2_attention_weights", lambda q, k, s, b: attention(q, k, s, None)), "mask ignored")


# ------------------------------------------------------------------------------------------ lesson 5
def test_cfg_mix_mistakes():
    def t_of(cfg, si, K):
        return cfg * si / (K - 1) if K > 1 else 0.0
    assert_wrong(check("cfg_mix", lambda c, u, cfg, si, K: (1 + t_of(cfg, si, K)) * u - t_of(cfg, si, K) * c),
                 "sign flipped")
    assert_wrong(check("cfg_mix", lambda c, u, cfg, si, K: c + cfg * (c - u)), "no ramp")
    assert_wrong(check("cfg_mix", lambda c, u, cfg, si, K: c + cfg * si / K * (c - u)), "si / K instead of si / (K - 1)")


def test_cfg_mix_single_scale_division_by_zero_is_explained():
    result = check("cfg_mix", lambda c, u, cfg, si, K: c + cfg * si / (K - 1) * (c - u))
    assert result.status == "error" and "ZeroDivisionError" in result.message and "if num_scales > 1" in result.message


def nucleus(logits, p, keep):
    """A learner's top-p filter; ``keep(probs_sorted_desc, cumsum) -> bool`` decides which sorted entries stay."""
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    kept_sorted = keep(probs, probs.cumsum(-1))
    kept = torch.zeros_like(kept_sorted).scatter(-1, order, kept_sorted)
    return logits.masked_fill(~kept, -math.inf)


def filt(logits, k, p, keep=None, k_off=0, fill=-math.inf):
    if k > 0:
        kth = logits.sort(-1, descending=True).values[..., k - 1 + k_off: k + k_off]
        logits = logits.masked_fill(logits < kth, fill)
    if p > 0:
        logits = nucleus(logits, p, keep or (lambda probs, cum: cum - probs < p))
    return logits


def test_top_k_top_p_learner_version_passes():
    assert check("top_k_top_p", filt).passed


def test_top_k_top_p_mistakes():
    assert_wrong(check("top_k_top_p", lambda x, k, p: filt(x, k, p, keep=lambda probs, cum: cum - probs >= p)),
                 "wrong tail")
    assert_wrong(check("top_k_top_p", lambda x, k, p: filt(x, k, p, keep=lambda probs, cum: cum <= p)),
                 "stopping before the token that reaches top_p")
    assert_wrong(check("top_k_top_p", lambda x, k, p: filt(x, k, p, k_off=1)), "top-k keeping k + 1")
    assert_wrong(check("top_k_top_p", lambda x, k, p: filt(x, k, p, fill=0.0)), "set to 0 instead of -inf")


def test_top_k_top_p_nucleus_on_the_unfiltered_distribution_is_wrong():
    def nucleus_first(x, k, p):
        return filt(filt(x, 0, p), k, 0) if p > 0 else filt(x, k, 0)
    result = check("top_k_top_p", nucleus_first)
    assert result.status == "wrong" and "top_k=10, top_p=0.8" in result.message


# ------------------------------------------------------------------------------------------ lesson 6
def test_per_scale_cross_entropy_mistakes():
    def mean_all(logits, target, pn):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten()).repeat(len(pn))
    assert_wrong(check("per_scale_cross_entropy", mean_all), "mean over all L tokens")

    def sides_not_squares(logits, target, pn):
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        ends = np.cumsum([0] + list(pn))
        return torch.stack([loss[:, b:e].mean() for b, e in zip(ends[:-1], ends[1:])])
    assert_wrong(check("per_scale_cross_entropy", sides_not_squares), "pn_k positions per scale instead of pn_k^2")


def test_drop_labels_mistakes():
    def keep_rate(labels, p, n, g):
        return torch.where(torch.rand(len(labels), generator=g) > p, n, labels)
    assert_wrong(check("drop_labels", keep_rate), "that is 1 - drop_rate")

    def to_zero(labels, p, n, g):
        return torch.where(torch.rand(len(labels), generator=g) < p, 0, labels)
    assert_wrong(check("drop_labels", to_zero), "unconditional class 10")

    def in_place(labels, p, n, g):
        labels[torch.rand(len(labels), generator=g) < p] = n
        return labels
    assert_wrong(check("drop_labels", in_place), "modified in place")

    def global_rng(labels, p, n, g):
        return torch.where(torch.rand(len(labels)) < p, n, labels)
    assert_wrong(check("drop_labels", global_rng), "generator=generator")


# ------------------------------------------------------------------------------------------ lesson 7
def keep_masks(keep, pn, mode="bilinear", thresh=lambda r: r > 0.5, tiny=True):
    out = []
    for p in pn:
        if tiny and p * p <= 3:
            out.append(torch.ones(p, p, dtype=torch.bool))
        else:
            kw = {"align_corners": False} if mode == "bilinear" else {}
            out.append(thresh(F.interpolate(keep.float()[None, None], size=(p, p), mode=mode, **kw)[0, 0]))
    return out


def test_scale_keep_masks_mistakes():
    assert check("scale_keep_masks", keep_masks).passed
    assert_wrong(check("scale_keep_masks", lambda k, pn: keep_masks(k, pn, mode="nearest")), "nearest-neighbour")
    assert_wrong(check("scale_keep_masks", lambda k, pn: keep_masks(k, pn, tiny=False)), "tiny first scales")
    assert_wrong(check("scale_keep_masks", lambda k, pn: keep_masks(k, pn, thresh=lambda r: r <= 0.5)), "inverted")


def test_inpaint_overrides_keeping_the_hole():
    def keep_hole(tokens, hole, pn):
        return {k: (tokens[k], m) for k, m in enumerate(keep_masks(hole, pn))}
    assert_wrong(check("inpaint_overrides", keep_hole), "keeping the hole")


# ------------------------------------------------------------------------------------------ lesson 8
def test_attention_pairs_mistakes():
    def own_scale_only(pn, kv):
        return sum((p * p) ** 2 for p in pn)
    assert_wrong(check("attention_pairs", own_scale_only), "block-diagonal")

    def cached_always(pn, kv):
        return sol("attention_pairs")(pn, True)
    assert_wrong(check("attention_pairs", cached_always), "the cached count for both cases")


def test_raster_pairs_mistakes():
    assert_wrong(check("raster_pairs", lambda n, kv: sum(i if kv else i * i for i in range(n * n))), "off by one")
    assert_wrong(check("raster_pairs", lambda n, kv: sum(i if kv else i * i for i in range(1, n + 1))), "n steps")


def test_fit_power_law_mistakes():
    assert_wrong(check("fit_power_law", lambda x, y: np.polyfit(x, np.log(y), 1)[0]), "x not in log scale")
    assert_wrong(check("fit_power_law", lambda x, y: np.polyfit(np.log(x), np.log(y), 1)[1]), "intercept")


# ------------------------------------------------------------------------------------------ lesson 9
def test_var_param_count_names_the_missing_part():
    def without_adaln(depth):
        C = 64 * depth
        return sol("var_param_count")(depth) - depth * (6 * C * C + 6 * C)
    assert_wrong(check("var_param_count", without_adaln), "AdaLN (all blocks) (missing)")

    def with_mask_buffer(depth):
        return sol("var_param_count")(depth) + 680 * 680
    assert_wrong(check("var_param_count", with_mask_buffer), "attn_bias_for_masking", "buffers, not parameters")


def test_attention_capture_bytes_mistake():
    def squares(pn, depth, heads, batch=1, nbytes=4):
        out, seen = [], 0
        for p in pn:
            seen += p * p
            out.append(depth * heads * seen * seen * nbytes * batch)
        return out
    assert_wrong(check("attention_capture_bytes", squares), "L_k x L_k")


# ------------------------------------------------------------------------------------------ lesson models
def test_lesson_models_fall_back_to_synthetic_weights(monkeypatch, tmp_path, capsys):
    from varlite import builtin
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", tmp_path)        # as if no weights were shipped
    vqvae, var = ex.lesson_models("shapes")
    assert "SYNTHETIC" in capsys.readouterr().out
    assert not var.training and var.config.patch_nums == vqvae.config.patch_nums
    again = ex.lesson_models("shapes", verbose=False)[1]
    assert torch.equal(var.head.weight, again.head.weight)          # deterministic
