"""Checks of lesson 10 -- the capstone: a VAR written from the learner's own pieces, compared with the official
implementation's numbers.

The numbers are the upstream reference set ``varlite/reference/upstream_tiny``, package data of varlite (made with
FoundationVision/VAR itself on a tiny configuration: V = 64, Cv = 8, patch_nums 1..4, L = 30, depth 2, width 128,
2 heads; see its README). Its
weights are regenerated from ``config.json`` by the synthetic rule (``varlite.synthetic``), exactly as the parity tests
do, and handed to the learner as one dict ``W`` of plain tensors under the official parameter names.

Each piece is checked on its own inputs, so a mistake is reported where it is made. Where the reference set has the
array (token maps, f_hat, the teacher-forcing input, the logits of the masked forward pass, the guided logits and
tokens of both generations) the piece is compared with the **official** array; the pieces inside the transformer
(attention, one block, the head) are compared with varlite's modules on the same weights, which the parity tests
hold to the official numbers. ``check_my_var`` runs every piece and reports, piece by piece, which arrays match and
where the first difference is.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core import sampling
from ..core import var as var_module
from ..core.configs import get_preset
from ..core.quantizer import MultiScaleQuantizer, PhiPartiallyShared
from ..synthetic import synthetic_state_dict
from ..core.transformer import AdaLNBeforeHead, AdaLNSelfAttn, SelfAttention
from ..core.var import VAR
from ..core.vqvae import VQVAE
from .capstone_hints import HINTS
from .capstone_mistakes import diagnose
from ._check import (CheckResult, Shortcut, ShortcutCalled, _compare_list, _compare_tensor, _learner_line, _Mismatch,
                     _not_callable, _report, exercise, shortcuts_disabled)

# package data (pyproject.toml): the same folder in a git checkout and in an installed wheel
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference" / "upstream_tiny"

# Every model function of varlite answers some piece: all are refused while a piece runs.
_LIBRARY = ([Shortcut(MultiScaleQuantizer, a) for a in ("nearest_code", "lookup", "phi", "upsample_and_phi",
                                                         "residual_steps", "f_to_idx_Bl", "f_to_f_hats",
                                                         "idx_to_f_hats", "idx_to_var_input", "forward")]
            + [Shortcut(PhiPartiallyShared, a) for a in ("forward", "index_for")]
            + [Shortcut(VQVAE, a) for a in ("img_to_idx", "img_to_f_hats", "idx_to_img", "idx_to_var_input")]
            + [Shortcut(SelfAttention, a) for a in ("forward", "qkv", "attention_probabilities")]
            + [Shortcut(AdaLNSelfAttn, "forward"), Shortcut(AdaLNBeforeHead, "forward")]
            + [Shortcut(VAR, a) for a in ("forward", "logits", "generate_steps", "generate")]
            + [Shortcut(var_module, a) for a in ("block_causal_bias", "scale_index_of_tokens")]
            + [Shortcut(sampling, a) for a in ("cfg_strength", "guide", "filter_top_k_top_p", "sample_tokens")])


class ReferenceSetMissing(FileNotFoundError):
    """The upstream reference set is not where this copy of varlite should have it."""


@dataclass
class Reference:
    """The official numbers and what is needed to reproduce them."""
    W: dict[str, torch.Tensor]          # tokenizer and transformer weights, official names, float32 / int64
    config: dict[str, Any]              # patch_nums, vocab_size, Cv, depth, embed_dim, num_heads, num_classes, ...
    arrays: dict[str, torch.Tensor]     # cases.npz as tensors
    vqvae: VQVAE                        # varlite's models on the same weights (for the pieces inside the transformer)
    var: VAR

    def weights(self) -> dict[str, torch.Tensor]:
        """A fresh copy of W for one call of a learner's function (an in-place edit cannot spoil the next check)."""
        return {k: v.clone() for k, v in self.W.items()}


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    """Load the reference set (``REFERENCE_DIR``) and rebuild its weights."""
    if not (REFERENCE_DIR / "cases.npz").is_file():
        raise ReferenceSetMissing(f"the upstream reference set is not at {REFERENCE_DIR}: this copy of varlite was "
                                  f"installed without its package data: reinstall it from the varlite repository "
                                  f"(pip install . or pip install -e . in a checkout)")
    raw = json.loads((REFERENCE_DIR / "config.json").read_text())
    vae_args, var_args = raw["vae_constructor_args"], raw["var_constructor_args"]
    pn = tuple(var_args["patch_nums"])
    vae_sd, var_sd = (synthetic_state_dict(raw["models"][name]["state_dict"], raw["weights_seed"], pn)
                      for name in ("vae", "var"))
    preset = get_preset("tiny")
    vqvae = VQVAE(preset.vqvae)
    vqvae.load_state_dict(vae_sd, strict=True)
    var = VAR(preset.var, vqvae)
    var.load_state_dict(var_sd, strict=True)
    config = {"patch_nums": pn, "vocab_size": vae_args["vocab_size"], "Cv": vae_args["z_channels"],
              "depth": var_args["depth"], "embed_dim": var_args["embed_dim"], "num_heads": var_args["num_heads"],
              "num_classes": var_args["num_classes"], "norm_eps": var_args["norm_eps"],
              "phi_ratio": vae_args["quant_resi"]}
    W = {k: v for k, v in vae_sd.items() if k.startswith("quantize.")}
    W.update(var_sd)
    with np.load(REFERENCE_DIR / "cases.npz") as npz:
        arrays = {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    return Reference(W, config, arrays, vqvae.eval(), var.eval())


def _scales(ref: Reference, key: str) -> list[torch.Tensor]:
    return [ref.arrays[f"{key}.s{si}"] for si in range(len(ref.config["patch_nums"]))]


def _mask_bias(ref: Reference) -> torch.Tensor:
    return ref.W["attn_bias_for_masking"]


def _random(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- the pieces
@dataclass(frozen=True)
class Piece:
    """One piece of the capstone: how to run the learner's function on the reference set and what to compare with."""
    name: str
    number: str
    needs: tuple[str, ...]                  # the pieces it may call (a difference there explains one here)
    compared_with: str                      # which official array (or varlite module) is the reference
    run: Callable[[Callable, Reference], None]   # raises _Mismatch with the first difference


def _run_nearest_code(fn, ref):
    with torch.no_grad():
        steps = list(ref.vqvae.quantize.residual_steps(ref.arrays["f_encoded"]))
    for si, (step, official) in enumerate(zip(steps, _scales(ref, "idxBl"))):
        target_NCv = step.target.permute(0, 2, 3, 1).reshape(-1, ref.config["Cv"])
        got = fn(target_NCv.clone(), ref.W["quantize.embedding.weight"].clone())
        if isinstance(got, torch.Tensor) and got.numel() == official.numel():
            got = got.reshape(official.shape)           # (N,) -> (B, l)
        _compare_tensor(got, official, f"the tokens of scale {si + 1}", names=("b", "token"))


def _run_phi(fn, ref):
    K, H = len(ref.config["patch_nums"]), ref.config["patch_nums"][-1]
    f_hat = 0
    for si, (idx_Bl, official) in enumerate(zip(_scales(ref, "idxBl"), _scales(ref, "fhat"))):
        with torch.no_grad():
            h = ref.vqvae.quantize.lookup(idx_Bl, ref.config["patch_nums"][si])
            up = h if si == K - 1 else torch.nn.functional.interpolate(h, size=(H, H), mode="bicubic")
        f_hat = f_hat + fn(up, si, K, ref.weights())
        _compare_tensor(f_hat, official, f"f_hat after scale {si + 1} (the sum of your phi_k outputs)", atol=1e-5,
                        rtol=1e-5, names=("b", "channel", "row", "col"))


def _run_encode(fn, ref):
    got = fn(ref.arrays["f_encoded"].clone(), ref.weights(), ref.config["patch_nums"])
    _compare_list(got, _scales(ref, "idxBl"), "the token maps", lambda k: f"scale {k + 1}", names=("b", "token"))


def _run_var_input(fn, ref):
    got = fn([t.clone() for t in _scales(ref, "idxBl")], ref.weights(), ref.config["patch_nums"])
    _compare_tensor(got, ref.arrays["var_input"], "the teacher-forcing input", atol=1e-5, rtol=1e-5,
                    names=("b", "token", "channel"))


def _run_mask(fn, ref):
    _compare_tensor(fn(list(ref.config["patch_nums"])), _mask_bias(ref)[0, 0] == 0, "the mask",
                    names=("query", "key"), kind_hint="Return a bool mask (True = may attend).")


def _per_scale(x_BLC, patch_nums):
    begin, out = 0, []
    for pn in patch_nums:
        out.append(x_BLC[:, begin:begin + pn * pn])
        begin += pn * pn
    return out


def _run_attention(fn, ref):
    B, L, C = 2, sum(p * p for p in ref.config["patch_nums"]), ref.config["embed_dim"]
    for i, block in enumerate(ref.var.blocks):
        x = _random((B, L, C), 10 + i)
        with torch.no_grad():
            expected = block.attn(x, _mask_bias(ref))
        got = fn(x.clone(), ref.weights(), i, _mask_bias(ref).clone(), None)
        _compare_tensor(got, expected, f"block {i}'s attention output (masked pass)", atol=1e-5, rtol=1e-4,
                        names=("b", "token", "channel"))
        cache, pieces = {}, []
        for x_Blc in _per_scale(x, ref.config["patch_nums"]):      # one scale at a time, keys/values cached
            pieces.append(fn(x_Blc.clone(), ref.weights(), i, None, cache))
        _compare_tensor(torch.cat(pieces, 1), expected, f"block {i}'s attention output, one scale at a time with "
                        f"your cache (no mask)", atol=1e-5, rtol=1e-4, names=("b", "token", "channel"))


def _run_block(fn, ref):
    B, L, C = 2, sum(p * p for p in ref.config["patch_nums"]), ref.config["embed_dim"]
    cond_BD = ref.W["class_emb.weight"][ref.arrays["labels"]]
    for i, block in enumerate(ref.var.blocks):
        x = _random((B, L, C), 20 + i)
        with torch.no_grad():
            expected = block(x, cond_BD, attn_bias=_mask_bias(ref))
        got = fn(x.clone(), cond_BD.clone(), ref.weights(), i, _mask_bias(ref).clone(), None)
        _compare_tensor(got, expected, f"block {i}'s output", atol=1e-5, rtol=1e-4, names=("b", "token", "channel"))


def _run_head(fn, ref):
    B, L, C = 2, sum(p * p for p in ref.config["patch_nums"]), ref.config["embed_dim"]
    cond_BD = ref.W["class_emb.weight"][ref.arrays["labels"]]
    x = _random((B, L, C), 30)
    with torch.no_grad():
        expected = ref.var.head(ref.var.head_nm(x, cond_BD))
    _compare_tensor(fn(x.clone(), cond_BD.clone(), ref.weights()), expected, "the logits of the head", atol=1e-5,
                    rtol=1e-4, names=("b", "token", "vocab"))


def _run_forward(fn, ref):
    got = fn(ref.arrays["labels"].clone(), ref.arrays["var_input"].clone(), ref.weights(), dict(ref.config))
    _compare_tensor(got, ref.arrays["tf_logits"], "the logits of the masked forward pass", atol=1e-4, rtol=1e-4,
                    names=("b", "token", "vocab"))


def _run_guided(fn, ref):
    K = len(ref.config["patch_nums"])
    for si, (raw, official) in enumerate(zip(_scales(ref, "greedy.raw_logits"), _scales(ref, "greedy.cfg_logits"))):
        _compare_tensor(fn(raw.clone(), 1.5, si, K), official, f"the guided logits of scale {si + 1}", atol=1e-5,
                        rtol=1e-5, names=("b", "token", "vocab"))


def _run_filter(fn, ref):
    for si, logits in enumerate(_scales(ref, "sampled.cfg_logits")):
        expected = sampling.filter_top_k_top_p(logits, 5, 0.9)
        _compare_tensor(fn(logits.clone(), 5, 0.9), expected, f"the filtered logits of scale {si + 1} (top_k=5, "
                        f"top_p=0.9)", atol=1e-6, names=("b", "token", "vocab"))


def _run_generate(fn, ref):
    """Compared in generation order: scale 1's raw logits, its tokens, scale 2's raw logits, ..., the final f_hat --
    so the first difference named is the first the loop made (wrong tokens at scale 1 explain every later logit)."""
    labels = ref.arrays["labels"]
    for run, top_k, top_p, seed in (("greedy", 1, 0.0, 0), ("sampled", 5, 0.9, 42)):
        got = fn(labels.clone(), ref.weights(), dict(ref.config), 1.5, top_k, top_p, seed)
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            raise _Mismatch("generate must return (token_maps, raw_logits, f_hat)")
        token_maps, raw_logits, f_hat = got
        for what, got_list in (("raw logits", raw_logits), ("tokens", token_maps)):
            if not isinstance(got_list, (list, tuple)) or len(got_list) != len(ref.config["patch_nums"]):
                raise _Mismatch(f"the {run} run's {what}: expected a list of {len(ref.config['patch_nums'])} "
                                f"tensors (one per scale), got {type(got_list).__name__} of length "
                                f"{len(got_list) if isinstance(got_list, (list, tuple)) else '-'}")
        for si, (raw, tokens) in enumerate(zip(raw_logits, token_maps)):
            _compare_tensor(raw, ref.arrays[f"{run}.raw_logits.s{si}"], f"the {run} run's raw logits, scale {si + 1} "
                            f"(rows [:B] conditional, [B:] unconditional)", atol=1e-4, rtol=1e-4,
                            names=("row", "token", "vocab"))
            _compare_tensor(tokens, ref.arrays[f"{run}.idx.s{si}"], f"the {run} run's tokens, scale {si + 1}",
                            names=("b", "token"))
        _compare_tensor(f_hat, ref.arrays[f"{run}.f_hat"], f"the {run} run's final f_hat", atol=1e-4, rtol=1e-4,
                        names=("b", "channel", "row", "col"))


PIECES = [
    Piece("nearest_code", "10.1", (), "official idxBl.s0..s3 (each scale's target from the reference encoder)",
          _run_nearest_code),
    Piece("phi_of_scale", "10.2", (), "official fhat.s0..s3", _run_phi),
    Piece("encode_tokens", "10.3", ("nearest_code", "phi_of_scale"), "official idxBl.s0..s3", _run_encode),
    Piece("var_input", "10.4", ("phi_of_scale",), "official var_input", _run_var_input),
    Piece("block_causal_mask", "10.5", (), "official attn_bias_for_masking", _run_mask),
    Piece("attention", "10.6", (), "varlite SelfAttention (parity-tested), masked and cached", _run_attention),
    Piece("adaln_block", "10.7", ("attention",), "varlite AdaLNSelfAttn (parity-tested)", _run_block),
    Piece("logits_head", "10.8", (), "varlite head_nm + head (parity-tested)", _run_head),
    Piece("var_forward", "10.9", ("block_causal_mask", "adaln_block", "logits_head"), "official tf_logits",
          _run_forward),
    Piece("guided_logits", "10.10", (), "official greedy.cfg_logits.s0..s3", _run_guided),
    Piece("top_k_top_p", "10.11", (), "varlite filter_top_k_top_p on official sampled.cfg_logits", _run_filter),
    Piece("generate", "10.12", ("phi_of_scale", "adaln_block", "logits_head", "guided_logits", "top_k_top_p"),
          "official greedy.* and sampled.* (raw logits, tokens, f_hat)", _run_generate),
]
PIECE_BY_NAME = {piece.name: piece for piece in PIECES}


def _outcome(piece: Piece, fn) -> tuple[str, str, str]:
    """(status, detail, diagnosis) of one piece on the reference set; never raises. The diagnosis of a wrong piece
    names the catalogued mistake its answers equal (``capstone_mistakes``), or is empty."""
    if not callable(fn):
        return "missing", f"no function `{piece.name}` defined", ""
    def guarded(*args):                 # the learner's call, with varlite's model functions disabled
        with shortcuts_disabled(fn, _LIBRARY):
            return fn(*args)
    try:
        piece.run(guarded, reference())
    except NotImplementedError:
        return "not attempted", "still raises NotImplementedError", ""
    except ShortcutCalled as called:
        return "refused", called.reason, ""
    except _Mismatch as mismatch:
        mistake = diagnose(piece.name, guarded, reference())
        return "wrong", str(mismatch), "" if mistake is None else \
            f"this is exactly what {mistake.name} gives. {mistake.advice}"
    except ReferenceSetMissing:
        raise
    except Exception as err:        # the learner's code failed
        return "error", f"raised {type(err).__name__}: {err}{_learner_line(err)}", ""
    return "passed", f"matches {piece.compared_with}", ""


def _check_piece(name: str, fn, verbose: bool) -> CheckResult:
    if not callable(fn):
        return _not_callable(name, fn, verbose)
    piece = PIECE_BY_NAME[name]
    status, detail, diagnosis = _outcome(piece, fn)
    head = f"[{name}]"
    message = {"passed": f"{head} PASSED: {detail}.",
               "not attempted": f"{head} NOT ATTEMPTED YET: `{name}` still raises NotImplementedError. Write it "
                                f"above, run that cell, then this one.",
               "refused": f"{head} REFUSED: your function {detail}."}.get(status)
    if message is None:
        label = "WRONG" if status == "wrong" else "ERROR"
        message = f"{head} {label} on the reference set: {detail}."
        if piece.needs:
            message += f"\n  It calls your {', '.join(piece.needs)}: if one of them is not PASSED yet, fix that first."
        message += f"\n  Diagnosis: {diagnosis}" if diagnosis else f"\n  Hint 1 (the idea): {HINTS[name][0]}"
        message += f"\n  Still stuck? ex.hint(2) gives the approach, ex.hint(3) the code (exercise {piece.number})."
    return _report(CheckResult(name, status, message), verbose)


@dataclass
class CapstoneReport:
    """Piece by piece: status and detail, and the first piece that differs while everything it calls matches."""
    rows: list[tuple[str, str, str, str]]     # (piece, status, compared with, detail)
    first_difference: str | None

    @property
    def passed(self) -> bool:
        return all(status == "passed" for _, status, _, _ in self.rows)

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """Printed when the check ran."""

    def __str__(self) -> str:
        width = max(len(name) for name, *_ in self.rows)
        lines = [f"{name:<{width}}  {status.upper():<13}  {detail}" for name, status, _, detail in self.rows]
        if self.passed:
            lines.append("PASSED: every piece reproduces the official implementation -- your VAR is VAR.")
        elif self.first_difference:
            lines.append(f"First difference: {self.first_difference} (everything it calls matches; start there).")
        else:
            lines.append("No piece differs yet; finish the ones not attempted.")
        return "\n".join(lines)


def check_my_var(namespace: dict, verbose: bool = True) -> CapstoneReport:
    """Run every piece found in ``namespace`` (a notebook's ``globals()``) on the reference set, in pipeline order
    (tokenizer, transformer, sampling, the generation loop), and report which arrays match the official ones, the
    named mistake a wrong piece's answers equal, and the first difference: the first piece, in that order, that
    differs while every piece it calls matches."""
    rows, status_of = [], {}
    for piece in PIECES:
        status, detail, diagnosis = _outcome(piece, namespace.get(piece.name))
        if diagnosis:
            detail = f"{detail}; diagnosis: {diagnosis}"
        if status in ("wrong", "error"):
            broken = [dep for dep in piece.needs if status_of.get(dep) not in ("passed", None)]
            if broken:
                detail = f"(calls {', '.join(broken)}, which {'does' if len(broken) == 1 else 'do'} not pass) {detail}"
        status_of[piece.name] = status
        rows.append((piece.name, status, piece.compared_with, detail))
    first = next((name for name, status, _, _ in rows if status in ("wrong", "error", "refused") and
                  all(status_of.get(dep) == "passed" for dep in PIECE_BY_NAME[name].needs)), None)
    report = CapstoneReport(rows, first)
    if verbose:
        print(report)
    return report


# ---------------------------------------------------------------------------------------------- hints
for _piece in PIECES:
    if _piece.name in HINTS:
        exercise(_piece.name, _piece.number, concept=HINTS[_piece.name][0], approach=HINTS[_piece.name][1],
                 code=HINTS[_piece.name][2], shortcuts=_LIBRARY)


def check_phi_of_scale(phi_of_scale, verbose: bool = True) -> CheckResult:
    """``phi_of_scale(h_BCvHW, si, num_scales, W) -> (B, Cv, H, W)``: phi_k of 0-based scale si, official weights."""
    return _check_piece("phi_of_scale", phi_of_scale, verbose)


def check_encode_tokens(encode_tokens, verbose: bool = True) -> CheckResult:
    """``encode_tokens(f_BCvHW, W, patch_nums) -> [idx_Bl per scale]``: residual quantization, official weights."""
    return _check_piece("encode_tokens", encode_tokens, verbose)


def check_var_input(var_input, verbose: bool = True) -> CheckResult:
    """``var_input(token_maps, W, patch_nums) -> (B, L - 1, Cv)``: the teacher-forcing input."""
    return _check_piece("var_input", var_input, verbose)


def check_attention(attention, verbose: bool = True) -> CheckResult:
    """``attention(x_BLC, W, i, attn_bias, cache) -> (B, L, C)``: block i's attention sublayer; ``cache`` None or a
    dict the function keeps block i's keys and values in (one dict per generation)."""
    return _check_piece("attention", attention, verbose)


def check_adaln_block(adaln_block, verbose: bool = True) -> CheckResult:
    """``adaln_block(x_BLC, cond_BD, W, i, attn_bias, cache) -> (B, L, C)``: block i (AdaLN, attention, FFN)."""
    return _check_piece("adaln_block", adaln_block, verbose)


def check_logits_head(logits_head, verbose: bool = True) -> CheckResult:
    """``logits_head(x_BLC, cond_BD, W) -> (B, L, V)``: the AdaLN before the head, then the head."""
    return _check_piece("logits_head", logits_head, verbose)


def check_var_forward(var_forward, verbose: bool = True) -> CheckResult:
    """``var_forward(labels_B, x_BLCv, W, config) -> (B, L, V)``: the teacher-forced, masked forward pass."""
    return _check_piece("var_forward", var_forward, verbose)


def check_guided_logits(guided_logits, verbose: bool = True) -> CheckResult:
    """``guided_logits(logits_2BlV, cfg, si, num_scales) -> (B, l, V)``: the CFG ramp."""
    return _check_piece("guided_logits", guided_logits, verbose)


def check_generate(generate, verbose: bool = True) -> CheckResult:
    """``generate(labels_B, W, config, cfg, top_k, top_p, seed) -> (token_maps, raw_logits, f_hat)``: the KV-cached
    generation loop (token_maps: (B, l) per scale; raw_logits: (2B, l, V) per scale, before guidance)."""
    return _check_piece("generate", generate, verbose)


__all__ = ["reference", "check_my_var", "PIECES", "check_phi_of_scale", "check_encode_tokens", "check_var_input",
           "check_attention", "check_adaln_block", "check_logits_head", "check_var_forward", "check_guided_logits",
           "check_generate"]
