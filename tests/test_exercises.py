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
    SOLUTIONS = {n: importlib.import_module(f"solutions.lesson{n:02d}") for n in (*range(1, 11), 12)}   # 11: none
finally:
    sys.path.remove(str(LESSONS))


def solution_functions():
    """(lesson, name, function) for every exercise function of every solution module."""
    out = []
    for n, module in SOLUTIONS.items():
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and not name.startswith("_"):     # _helpers are no exercise
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
    checks = {name[len("check_"):] for name in ex.__all__ if name.startswith("check_")} - {"my_var"}
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
    result = ex.check_top_k_top_p(sol("top_k_top_p"))
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


# ------------------------------------------------------------------------------------------ shortcuts, hints, hidden cases
def _quantizer_of(args):
    return next(a for a in args if hasattr(a, "nearest_code"))


def _library_quantizer(codebook_VCv, patch_nums=(1,)):
    """varlite's MultiScaleQuantizer around a given codebook, built as a learner would (not through the checker)."""
    from varlite.core.configs import VQVAEConfig
    from varlite.core.quantizer import MultiScaleQuantizer
    q = MultiScaleQuantizer(VQVAEConfig(vocab_size=codebook_VCv.shape[0], z_channels=codebook_VCv.shape[1], ch=32,
                                        patch_nums=tuple(patch_nums)))
    with torch.no_grad():
        q.embedding.weight.copy_(codebook_VCv)
    return q


# The obvious library answer to every exercise, written as a learner would (the setup cells import these modules).
SHORTCUTS = {
    "nearest_code": lambda z, e: _library_quantizer(e).nearest_code(z),
    "lookup": lambda idx, e, side: _library_quantizer(e).lookup(idx, side),
    "residual_quantize": lambda f, q: q.f_to_idx_Bl(f),
    "f_hat_from_tokens": lambda maps, q: q.idx_to_f_hats(maps),
    "teacher_forcing_input": lambda maps, q: q.idx_to_var_input(maps),
    "block_causal_mask": lambda pn: __import__("varlite.core.var", fromlist=["x"]).block_causal_bias(pn)[0, 0] == 0,
    "adaln": None,                      # needs a module built around the learner's ada_lin: see the test below
    "l2_attention_weights": None,       # likewise
    "top_k_top_p": lambda x, k, p: __import__("varlite.core.sampling", fromlist=["x"]).filter_top_k_top_p(x, k, p),
    "sample_scale": lambda x, cfg, si, K, k, p, g: __import__("varlite.core.sampling", fromlist=["x"]).sample_tokens(
        __import__("varlite.core.sampling", fromlist=["x"]).guide(x, cfg * si / max(K - 1, 1)), g),
    "per_scale_cross_entropy": lambda x, t, pn: __import__("varlite.train.metrics", fromlist=["x"]).per_scale_loss_acc(
        x, t, [(sum(q * q for q in pn[:i]), sum(q * q for q in pn[:i + 1])) for i in range(len(pn))])[1],
    "vq_loss": None,                    # the library computes it only from f through the quantizer: see below
    "scale_keep_masks": lambda keep, pn: [m[0] for m in __import__("varlite.editing", fromlist=["x"]).scale_keep_masks(
        keep, pn)],
    "attention_pairs": lambda pn, kv: None,   # replaced below (needs a config)
    "fit_power_law": lambda x, y: (np.polyfit(np.log(x), np.log(y), 1)[0], np.exp(np.polyfit(np.log(x), np.log(y), 1)[1]),
                                   np.corrcoef(np.log(x), np.log(y))[0, 1]),
    "var_param_count": None,
    "kv_cache_bytes": lambda pn, d, C, b, nb=4: __import__("varlite.complexity", fromlist=["x"]).attention_capture_bytes(
        __import__("varlite.core.configs", fromlist=["x"]).VARConfig(vocab_size=16, z_channels=4, patch_nums=tuple(pn),
                                                               num_classes=1, depth=d, embed_dim=C, num_heads=1), b, nb),
}


def _adaln_shortcut(x, cond, ada_lin):
    from varlite.core.transformer import AdaLNBeforeHead
    head_nm = AdaLNBeforeHead(x.shape[-1], 1e-6)
    head_nm.ada_lin = ada_lin
    return head_nm(x, cond)


def _attention_shortcut(q, k, s, bias):
    from varlite.core.transformer import SelfAttention
    attn = SelfAttention(0, q.shape[1] * q.shape[-1], q.shape[1])
    return attn.attention_probabilities(torch.zeros(q.shape[0], q.shape[2], q.shape[1] * q.shape[-1]), bias)


def _vq_shortcut(f, f_hats, beta):
    q = _library_quantizer(torch.randn(8, f.shape[1]), (f.shape[-1],)).train()
    decoder_input, loss, _ = q(f)
    return decoder_input, loss


def _attention_pairs_shortcut(pn, kv):
    from varlite import complexity
    from varlite.core.configs import VARConfig
    cost = complexity.var_cost(VARConfig(vocab_size=16, z_channels=4, patch_nums=tuple(pn), num_classes=1, depth=1,
                                         embed_dim=1, num_heads=1))
    return (cost.attention_flops_cached if kv else cost.attention_flops_uncached) // 4


def _param_count_shortcut(depth):
    from varlite.core.configs import official_var, official_vqvae
    from varlite.core.var import VAR
    from varlite.core.vqvae import VQVAE
    with torch.device("meta"):
        return sum(p.numel() for p in VAR(official_var(depth), VQVAE(official_vqvae())).parameters())


def _train_step_shortcut(var, vqvae, token_maps, labels_B, optimizer, label_smoothing):
    from varlite.train.metrics import per_scale_loss_acc
    with torch.no_grad():
        x_BLCv = vqvae.idx_to_var_input(token_maps)
    loss = per_scale_loss_acc(var(labels_B, x_BLCv), torch.cat(token_maps, 1), var.begin_ends, label_smoothing)[0].mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _capstone_shortcut(piece, quantizer, var):
    """The library's answer to a capstone piece, through varlite's models on the reference weights (``quantizer``
    and ``var``: the reference set's models, which a learner could build from W)."""
    def shortcut(*args):
        if piece == "phi_of_scale":
            return quantizer.phi(args[0], args[1])
        if piece == "encode_tokens":
            return quantizer.f_to_idx_Bl(args[0])
        if piece == "var_input":
            return quantizer.idx_to_var_input(args[0])
        if piece == "attention":
            return var.blocks[args[2]].attn(args[0], args[3])
        if piece == "adaln_block":
            return var.blocks[args[3]](args[0], args[1], attn_bias=args[4])
        if piece == "logits_head":
            return var.logits(args[0], args[1])
        if piece == "var_forward":
            return var(args[0], args[1])
        if piece == "guided_logits":
            from varlite.core import sampling
            return sampling.guide(args[0], sampling.cfg_strength(args[1], args[2], args[3]))
        steps = list(var.generate_steps(args[0], cfg=args[3], top_k=args[4], top_p=args[5], seed=args[6]))
        return [s.tokens.flatten(1) for s in steps], [s.raw_logits for s in steps], steps[-1].f_hat
    return shortcut


CAPSTONE_PIECES = ("phi_of_scale", "encode_tokens", "var_input", "attention", "adaln_block", "logits_head", "var_forward",
                   "guided_logits", "generate")
SHORTCUTS["train_step"] = _train_step_shortcut
SHORTCUTS["tokenizer_loss"] = lambda vqvae, img, vq_loss: (lambda out: (F.mse_loss(out[0], img) + out[1], out[0]))(
    vqvae(img))
SHORTCUTS.update(adaln=_adaln_shortcut, l2_attention_weights=_attention_shortcut, vq_loss=_vq_shortcut,
                 attention_pairs=_attention_pairs_shortcut, var_param_count=_param_count_shortcut)
SHORTCUTS["fit_paper_form"] = lambda N, y: (lambda a, log_c: (a, math.exp(log_c / a)))(*np.polyfit(np.log(N), np.log(y), 1))
SHORTCUTS["frechet_distance"] = lambda a, b: importlib.import_module("varlite.train.metrics").frechet_distance(a, b)
SHORTCUTS["inception_score"] = lambda p: float(F.kl_div(p.mean(0).log().expand_as(p), p, reduction="batchmean").exp())
SHORTCUTS["perceptual_distance"] = lambda fx, fy: importlib.import_module("varlite.train.perceptual").feature_distance(
    fx, fy)
SHORTCUTS["adaptive_weight"] = lambda r, g, w: importlib.import_module("varlite.train.discriminator").adaptive_weight(
    r, g, w)


def test_every_exercise_has_a_shortcut_test():
    assert set(SHORTCUTS) | set(CAPSTONE_PIECES) == set(ex.EXERCISES)


@pytest.mark.parametrize("name", sorted(set(SHORTCUTS) | set(CAPSTONE_PIECES)))
def test_the_obvious_library_shortcut_is_refused_or_not_the_answer(name):
    """Calling the library function an exercise asks for never passes: the check refuses it (it names the library
    function), or -- where the library computes something else (kv_cache_bytes vs attention_capture_bytes) -- it is
    simply wrong."""
    if name in CAPSTONE_PIECES:
        ref = ex.lesson10.reference()
        shortcut = _capstone_shortcut(name, ref.vqvae.quantize, ref.var)
    else:
        shortcut = SHORTCUTS[name]
    result = check(name, shortcut)
    assert not result.passed, result.message
    if name == "kv_cache_bytes":
        assert result.status in ("refused", "wrong"), result.message
    else:
        assert result.status == "refused", result.message
        assert "REFUSED" in result.message and "varlite's own version" in result.message


def test_shortcut_bound_to_a_second_name_is_refused_and_restored():
    from varlite.core.sampling import filter_top_k_top_p as my_filter
    namespace = {"my_filter": my_filter}
    exec("def top_k_top_p(x, k, p):\n    return my_filter(x, k, p)\n", namespace)
    assert check("top_k_top_p", namespace["top_k_top_p"]).status == "refused"
    assert namespace["my_filter"] is my_filter                       # restored after the check
    from varlite.core import sampling
    assert sampling.filter_top_k_top_p is my_filter


def test_a_learner_except_exception_cannot_hide_a_shortcut():
    def top_k_top_p(x, k, p):
        try:
            from varlite.core.sampling import filter_top_k_top_p
            return filter_top_k_top_p(x, k, p)
        except Exception:
            return x
    assert check("top_k_top_p", top_k_top_p).status == "refused"


def test_wrong_prints_the_idea_never_the_code_then_hints_on_request(capsys):
    code = ex.EXERCISES["nearest_code"].code
    result = ex.check_nearest_code(lambda z, e: torch.cdist(z, e).argmin(dim=0)[: len(z)] * 0)
    assert result.status == "wrong"
    assert ex.EXERCISES["nearest_code"].concept in result.message and code not in result.message
    assert "ex.hint(2)" in result.message
    capsys.readouterr()
    assert ex.EXERCISES["nearest_code"].approach in ex.hint(2) and code not in ex.hint(2)
    assert code in ex.hint(3)
    assert "Hint 3 of 3 (the code, exercise 1.1)" in capsys.readouterr().out


def test_named_mistakes_never_print_the_code():
    for name, fn in [("nearest_code", lambda z, e: torch.cdist(z, e).argmax(dim=1)),
                     ("block_causal_mask", lambda pn: levels(pn)[:, None] <= levels(pn)[None, :])]:
        result = check(name, fn)
        assert result.status == "wrong" and ex.EXERCISES[name].code not in result.message


def test_hint_names_unknown_exercises_and_levels():
    assert "No exercise named 'nope'" in ex.hint(1, "nope")
    with pytest.raises(ValueError, match="hint level must be 1"):
        ex.EXERCISES["lookup"].hint(4)


def test_every_check_has_hidden_cases_whose_inputs_are_not_described():
    """Lessons 1-9 (the capstone's pieces are checked on the official reference set, which is the point)."""
    capstone = {name for name, exercise in ex.EXERCISES.items() if exercise.number.startswith("10.")}
    for name in set(ex.EXERCISES) - capstone:
        result = check(name, sol(name))
        assert "hidden) agree" in result.message and " 0 hidden" not in result.message, result.message

    def wrong_on_hidden_only(z, e):                     # right on the shown sizes, wrong on the hidden V = 33
        idx = sol("nearest_code")(z, e)
        return idx if e.shape[0] in (3, 64, 512) else idx * 0
    result = check("nearest_code", wrong_on_hidden_only)
    assert "hidden case 4 of 5 (inputs not shown)" in result.message and "V=33" not in result.message


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


def test_f_hat_from_tokens_mistakes():
    def decode(maps, q, mode="bicubic", phi=True, cumulative=True):
        H, f_hat, out = q.patch_nums[-1], 0, []
        for si, (idx, pn) in enumerate(zip(maps, q.patch_nums)):
            up = F.interpolate(q.lookup(idx, pn), size=(H, H), mode=mode)
            c = q.phi(up, si) if phi else up
            f_hat = f_hat + c if cumulative else c
            out.append(f_hat)
        return out
    assert check("f_hat_from_tokens", decode).passed
    assert_wrong(check("f_hat_from_tokens", lambda m, q: decode(m, q, phi=False)), "without phi_k")
    assert_wrong(check("f_hat_from_tokens", lambda m, q: decode(m, q, mode="bilinear")), "bilinear upsampling")
    assert_wrong(check("f_hat_from_tokens", lambda m, q: decode(m, q, cumulative=False)), "running sum")


# ------------------------------------------------------------------------------------------ lesson 3
def levels(pn):
    return torch.cat([torch.full((p * p,), k) for k, p in enumerate(pn)])


def test_teacher_forcing_input_mistakes():
    def tf_input(maps, q, leak=False):
        f_hats, pns, out = q.idx_to_f_hats(maps), q.patch_nums, []
        for si in range(len(pns) - 1):
            x = F.interpolate(f_hats[si + 1 if leak else si], size=(pns[si + 1],) * 2, mode="area")
            out.append(x.flatten(2).transpose(1, 2))
        return torch.cat(out, 1)
    result = check("teacher_forcing_input", tf_input)
    assert result.status == "refused" and "idx_to_f_hats" in result.message      # the decoder is exercise 2.2
    leaky = sol("f_hat_from_tokens")

    def tf_own(maps, q, leak=False):
        f_hats, pns, out = leaky(maps, q), q.patch_nums, []
        for si in range(len(pns) - 1):
            x = F.interpolate(f_hats[si + 1 if leak else si], size=(pns[si + 1],) * 2, mode="area")
            out.append(x.flatten(2).transpose(1, 2))
        return torch.cat(out, 1)
    assert check("teacher_forcing_input", tf_own).passed
    assert_wrong(check("teacher_forcing_input", lambda m, q: tf_own(m, q, leak=True)), "answer leaks")


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
def sampler(x, cfg, si, K, k, p, g, sign=1, ramp=True, greedy=False):
    B, V = x.shape[0] // 2, x.shape[-1]
    t = (cfg * si / (K - 1) if K > 1 else 0.0) if ramp else cfg
    guided = sol("top_k_top_p")(x[:B] + sign * t * (x[:B] - x[B:]), k, p)
    if greedy:
        return guided.argmax(-1)
    return torch.multinomial(guided.softmax(-1).view(-1, V), 1, replacement=True, generator=g).view(B, -1)


def test_sample_scale_learner_version_passes():
    assert check("sample_scale", sampler).passed


def test_sample_scale_mistakes():
    assert_wrong(check("sample_scale", lambda *a: sampler(*a, sign=-1)), "sign flipped")
    assert_wrong(check("sample_scale", lambda *a: sampler(*a, ramp=False)), "no ramp")
    assert_wrong(check("sample_scale", lambda *a: sampler(*a, greedy=True)), "most likely token instead of a sample")


def test_sample_scale_single_scale_division_by_zero_is_an_error_with_the_idea():
    def no_k1(x, cfg, si, K, k, p, g):
        return sampler(x, cfg * si / (K - 1), K - 1, K, k, p, g, ramp=False)
    result = check("sample_scale", no_k1)
    assert result.status == "error" and "ZeroDivisionError" in result.message
    assert "Hint 1 (the idea)" in result.message and "ex.hint(2)" in result.message


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


def test_vq_loss_reference_is_what_the_quantizer_trains_with():
    """The check's formula (values and straight-through input) equals MultiScaleQuantizer.forward on real f_hats."""
    from varlite.exercises._check import _quantizer
    from varlite.exercises.lesson06 import _vq_reference
    q = _quantizer(64, 8, (1, 2, 4), seed=0).train()
    f = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    decoder_input, loss, _ = q(f)
    mine_input, mine_loss = _vq_reference(f, q.f_to_f_hats(f), q.beta)
    assert torch.allclose(decoder_input, mine_input) and torch.allclose(loss, mine_loss)


def test_tokenizer_loss_reference_is_what_the_tokenizer_trainer_computes(tmp_path, monkeypatch):
    """On the same seed and batch, the check's reference (the learner's path: encode, f_hats, vq_loss, decode) gives
    TokenizerTrainer.compute_loss's loss and the same gradient for every parameter; the check's model is the trainer's
    initial model (same seed)."""
    from varlite.exercises.lesson06 import _tokenizer_case, _tokenizer_reference, _vq_reference
    from varlite.train import tokenizer as tokenizer_module
    from varlite.data import images_at
    from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer

    class Images:                      # four random 64-px images (the tiny preset's size), in memory
        images_u8 = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        labels = torch.tensor([0, 1, 0, 1])

        def __len__(self):
            return 4
    monkeypatch.setattr(tokenizer_module, "load_checked", lambda *args, **kw: Images())
    trainer = TokenizerTrainer(TokenizerTrainConfig(run_dir=str(tmp_path / "run"), preset="tiny", dataset="folder",
                                                    data_root=str(tmp_path), steps=1, batch_size=2, progress=False,
                                                    seed=0))
    vqvae, _ = _tokenizer_case(0, 2)
    for (name, mine), theirs in zip(vqvae.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(mine, theirs), name
    idx_b = torch.tensor([0, 3])
    trainer.model.train().zero_grad()
    loss, _ = trainer.compute_loss(idx_b, step=1)
    loss.backward()
    img = images_at(trainer.train_set, idx_b, "cpu")
    vqvae.train().zero_grad()
    mine, _ = _tokenizer_reference(vqvae, img, _vq_reference)
    mine.backward()
    assert torch.allclose(mine, loss, rtol=1e-6, atol=0)
    for (name, p), q in zip(vqvae.named_parameters(), trainer.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name


def test_tokenizer_loss_mistakes():
    def loss_of(vqvae, img, vq_loss, st=True, post=True, with_vq=True):
        f = vqvae.quant_conv(vqvae.encoder(img))
        f_hats = vqvae.quantize.f_to_f_hats(f)
        x, vq = vq_loss(f, f_hats, vqvae.quantize.beta)
        x = x if st else f_hats[-1]
        recon = vqvae.decoder(vqvae.post_quant_conv(x) if post else x)
        return F.mse_loss(recon, img) + (vq if with_vq else 0), recon
    assert check("tokenizer_loss", loss_of).passed
    assert_wrong(check("tokenizer_loss", lambda *a: loss_of(*a, st=False)), "not the straight-through input")
    assert_wrong(check("tokenizer_loss", lambda *a: loss_of(*a, post=False)), "post_quant_conv left out")
    assert_wrong(check("tokenizer_loss", lambda *a: loss_of(*a, with_vq=False)), "the vq loss left out")
    assert_wrong(check("tokenizer_loss", lambda *a: (lambda l, r: (l.item(), r))(*loss_of(*a))), "expected a torch.Tensor")


def test_train_step_mistakes():
    def step(var, vqvae, maps, labels, opt, ls, zero=True, shift=0):
        with torch.no_grad():
            x = vqvae.idx_to_var_input(maps)
        logits, target = var(labels, x), torch.cat(maps, 1)
        if shift:
            logits, target = logits[:, :-1], target[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=ls)
        if zero:
            opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    assert check("train_step", step).passed
    assert_wrong(check("train_step", lambda *a: step(*a, zero=False)), "no optimizer.zero_grad()")
    assert_wrong(check("train_step", lambda *a: step(*a, shift=1)), "next-token targets")
    assert_wrong(check("train_step", lambda v, q, m, l, o, ls: step(v, q, m, l, o, 0.0)), "label smoothing left out")


def test_vq_loss_mistakes():
    def vq(f, f_hats, beta, st=True, detach=True):
        sg = (lambda x: x.detach()) if detach else (lambda x: x)
        loss = sum(beta * F.mse_loss(sg(h), f) + F.mse_loss(h, sg(f)) for h in f_hats) / len(f_hats)
        return (f + (f_hats[-1] - f).detach() if st else f_hats[-1]), loss
    assert check("vq_loss", vq).passed
    assert_wrong(check("vq_loss", lambda f, h, b: vq(f, h, b, st=False)), "no straight-through")
    assert_wrong(check("vq_loss", lambda f, h, b: vq(f, h, b, detach=False)), "no stop-gradient")
    assert_wrong(check("vq_loss", lambda f, h, b: (h[-1].detach(), vq(f, h, b)[1].detach())), "carries a gradient")


# ------------------------------------------------------------------------------------------ lesson 7
def keep_masks(keep, pn, mode="bilinear", inverted=False, tiny=True):
    out = []
    for p in pn:
        if tiny and p * p <= 3:
            out.append(torch.ones(p, p, dtype=torch.bool))
        else:
            kw = {"align_corners": False} if mode == "bilinear" else {}
            ratio = F.interpolate(keep.float()[None, None], size=(p, p), mode=mode, **kw)[0, 0]
            out.append(ratio <= 0.5 if inverted else ratio > 0.5)
    return out


def test_scale_keep_masks_mistakes():
    assert check("scale_keep_masks", keep_masks).passed
    assert_wrong(check("scale_keep_masks", lambda k, pn: keep_masks(k, pn, mode="nearest")), "nearest-neighbour")
    assert_wrong(check("scale_keep_masks", lambda k, pn: keep_masks(k, pn, tiny=False)), "tiny first scales")
    assert_wrong(check("scale_keep_masks", lambda k, pn: keep_masks(k, pn, inverted=True)), "inverted")


# ------------------------------------------------------------------------------------------ lesson 8
def test_attention_pairs_mistakes():
    def own_scale_only(pn, kv):
        return sum((p * p) ** 2 for p in pn)
    assert_wrong(check("attention_pairs", own_scale_only), "block-diagonal")

    def cached_always(pn, kv):
        return sol("attention_pairs")(pn, True)
    assert_wrong(check("attention_pairs", cached_always), "the cached count for both cases")


def fit_sums(x, y, log_x=True, log_c=False):
    u, v = np.asarray(x, float), np.log(y)
    u = np.log(u) if log_x else u
    du, dv = u - u.mean(), v - v.mean()
    a = (du * dv).sum() / (du ** 2).sum()
    log_c_value = v.mean() - a * u.mean()
    r = (du * dv).sum() / np.sqrt((du ** 2).sum() * (dv ** 2).sum())
    return a, log_c_value if log_c else np.exp(log_c_value), r


def test_fit_power_law_mistakes():
    assert check("fit_power_law", fit_sums).passed
    assert_wrong(check("fit_power_law", lambda x, y: fit_sums(x, y, log_x=False)), "x not in log scale")
    assert_wrong(check("fit_power_law", lambda x, y: fit_sums(x, y, log_c=True)), "log c instead of c")
    assert_wrong(check("fit_power_law", lambda x, y: fit_sums(x, y)[0]), "expected a tuple (a, c, r)")


# ------------------------------------------------------------------------------------------ lesson 9
def test_var_param_count_names_the_missing_part():
    def without_adaln(depth):
        C = 64 * depth
        return sol("var_param_count")(depth) - depth * (6 * C * C + 6 * C)
    assert_wrong(check("var_param_count", without_adaln), "AdaLN (all blocks) (missing)")

    def with_mask_buffer(depth):
        return sol("var_param_count")(depth) + 680 * 680
    assert_wrong(check("var_param_count", with_mask_buffer), "attn_bias_for_masking", "buffers, not parameters")


def test_kv_cache_bytes_reference_matches_a_real_generation(tiny_models, monkeypatch):
    """The check's formula against the KVCache a real guided generation leaves behind (tiny reference model)."""
    from varlite.exercises.lesson09 import kv_cache_bytes_reference
    from varlite.core.transformer import KVCache
    caches = []
    original = KVCache.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        caches.append(self)
    monkeypatch.setattr(KVCache, "__init__", record)
    vqvae, var = tiny_models
    list(var.generate_steps([1, 2, 3], cfg=1.5, seed=0))
    held = sum(t.numel() * t.element_size() for cache in caches for t in cache.keys + cache.values)
    config = var.config
    assert held == kv_cache_bytes_reference(config.patch_nums, config.depth, config.embed_dim, batch=3)


def test_kv_cache_bytes_mistakes():
    def no_doubling(pn, depth, C, batch, nbytes=4):
        return 2 * depth * batch * sum(p * p for p in pn) * C * nbytes
    assert_wrong(check("kv_cache_bytes", no_doubling), "not doubled for guidance")


# ------------------------------------------------------------------------------------------ lesson models
def test_lesson_models_fall_back_to_synthetic_weights(monkeypatch, tmp_path, capsys):
    from varlite import builtin
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", tmp_path)        # as if no weights were shipped
    vqvae, var = ex.lesson_models("shapes")
    assert "SYNTHETIC" in capsys.readouterr().out
    assert not var.training and var.config.patch_nums == vqvae.config.patch_nums
    again = ex.lesson_models("shapes", verbose=False)[1]
    assert torch.equal(var.head.weight, again.head.weight)          # deterministic


# ------------------------------------------------------------------------------------------ lesson 10: the capstone
def capstone_namespace():
    """The reference solution executed into one dict, as a notebook's globals: pieces call each other through it."""
    namespace = {"__name__": "capstone"}
    exec(compile((LESSONS / "solutions" / "lesson10.py").read_text(), "lesson10.py", "exec"), namespace)
    return namespace


def test_capstone_reference_solution_reproduces_every_official_array(capsys):
    report = ex.check_my_var(capstone_namespace())
    assert report.passed and report.first_difference is None
    assert [row[0] for row in report.rows] == [piece.name for piece in ex.lesson10.PIECES]
    out = capsys.readouterr().out
    assert "PASSED: every piece reproduces the official implementation" in out
    assert "matches official tf_logits" in out and "matches official greedy.* and sampled.*" in out


def test_capstone_unsolved_notebook_reports_not_attempted():
    def stub(*args):
        raise NotImplementedError
    report = ex.check_my_var({piece.name: stub for piece in ex.lesson10.PIECES}, verbose=False)
    assert {status for _, status, _, _ in report.rows} == {"not attempted"} and report.first_difference is None


def _mistake(source):
    """A learner's wrong version of one piece: ``source`` redefines it; ``solution`` is the correct one."""
    def inject(namespace):
        namespace["solution"] = dict(namespace)
        exec(source, namespace)
    return inject


# (the piece the report must name, a typical mistake in that piece)
CAPSTONE_MISTAKES = {
    "argmax instead of argmin": ("nearest_code", "def nearest_code(z, e):\n    return torch.cdist(z, e).argmax(1)"),
    "phi without the identity blend": ("phi_of_scale", "def phi_of_scale(h, si, K, W):\n"
                                       "    return 2 * solution['phi_of_scale'](h, si, K, W) - h"),
    "the rest never updated": ("encode_tokens", "def encode_tokens(f, W, pn):\n    B, Cv = f.shape[:2]\n"
                               "    return [nearest_code(F.interpolate(f, size=(p, p), mode='area').permute(0, 2, 3, 1)"
                               ".reshape(-1, Cv), W['quantize.embedding.weight']).view(B, -1) for p in pn]"),
    "the answer leaking into the input": ("var_input", "def var_input(maps, W, pn):\n"
                                          "    return solution['var_input'](maps[1:] + maps[-1:], W, pn)"),
    "a strict mask": ("block_causal_mask", "def block_causal_mask(pn):\n"
                      "    return solution['block_causal_mask'](pn) & ~torch.eye(sum(p * p for p in pn), dtype=bool)"),
    "1/sqrt(c) instead of the logit scale": ("attention", "def attention(x, W, i, bias, cache):\n"
                                             "    W = dict(W); W[f'blocks.{i}.attn.scale_mul_1H11'] = "
                                             "W[f'blocks.{i}.attn.scale_mul_1H11'] * 0 - 0.5 * math.log(64)\n"
                                             "    return solution['attention'](x, W, i, bias, cache)"),
    "a cache that never stores": ("attention", "def attention(x, W, i, bias, cache):\n"
                                  "    return solution['attention'](x, W, i, bias, None if cache is None else {})"),
    "scale and shift swapped": ("adaln_block", "def adaln_block(x, cond, W, i, bias, cache):\n"
                                "    W = dict(W); w = W[f'blocks.{i}.ada_lin.1.weight']; b = W[f'blocks.{i}.ada_lin.1.bias']\n"
                                "    perm = torch.cat([torch.arange(128) + 128 * j for j in (0, 1, 4, 5, 2, 3)])\n"
                                "    W[f'blocks.{i}.ada_lin.1.weight'], W[f'blocks.{i}.ada_lin.1.bias'] = w[perm], b[perm]\n"
                                "    return solution['adaln_block'](x, cond, W, i, bias, cache)"),
    "the exact GELU instead of the tanh one": ("adaln_block", "_gelu = F.gelu\n"
                                               "def adaln_block(x, cond, W, i, bias, cache):\n"
                                               "    F.gelu = lambda h, approximate='none': _gelu(h)\n"
                                               "    try:\n        return solution['adaln_block'](x, cond, W, i, bias, cache)\n"
                                               "    finally:\n        F.gelu = _gelu"),
    "the head's AdaLN without 1 +": ("logits_head", "def logits_head(x, cond, W):\n    B, L, C = x.shape\n"
                                     "    s, t = F.linear(F.silu(cond), W['head_nm.ada_lin.1.weight'], "
                                     "W['head_nm.ada_lin.1.bias']).view(B, 1, 2, C).unbind(2)\n"
                                     "    return F.linear(F.layer_norm(x, (C,), eps=1e-6) * s + t, W['head.weight'], "
                                     "W['head.bias'])"),
    "pos_start forgotten": ("var_forward", "def var_forward(labels, x, W, config):\n"
                            "    W = dict(W); W['pos_start'] = W['pos_start'] * 0\n"
                            "    return solution['var_forward'](labels, x, W, config)"),
    "no guidance ramp": ("guided_logits", "def guided_logits(x, cfg, si, K):\n"
                         "    return solution['guided_logits'](x, cfg, K - 1, K)"),
    "top-k keeping k + 1": ("top_k_top_p", "def top_k_top_p(x, k, p):\n"
                            "    return solution['top_k_top_p'](x, k + 1 if k > 0 else 0, p)"),
    "the unconditional rows given the labels": ("generate", "def generate(labels, W, config, cfg, k, p, seed):\n"
                                                "    config = dict(config, num_classes=int(labels[0]))\n"
                                                "    return solution['generate'](labels, W, config, cfg, k, p, seed)"),
}


def test_capstone_has_at_least_ten_typical_mistakes_over_distinct_pieces():
    assert len(CAPSTONE_MISTAKES) >= 10 and len({piece for piece, _ in CAPSTONE_MISTAKES.values()}) >= 10


@pytest.mark.parametrize("mistake", sorted(CAPSTONE_MISTAKES))
def test_capstone_report_pinpoints_the_mistaken_piece(mistake):
    piece, source = CAPSTONE_MISTAKES[mistake]
    namespace = capstone_namespace()
    namespace.update(math=math, F=F, torch=torch)
    _mistake(source)(namespace)
    report = ex.check_my_var(namespace, verbose=False)
    assert report.first_difference == piece, str(report)
    status = {name: status for name, status, _, _ in report.rows}
    assert status[piece] in ("wrong", "error"), str(report)
    needs = {p.name: p.needs for p in ex.lesson10.PIECES}
    for name, s in status.items():         # every piece that neither is nor calls the mistaken one still passes
        if name != piece and piece not in needs[name] and not any(piece in needs[d] for d in needs[name]):
            assert s == "passed", f"{name}: {s}\n{report}"
    assert f"First difference: {piece}" in str(report)
