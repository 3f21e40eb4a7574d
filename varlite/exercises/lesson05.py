"""Checks of lesson 5 -- sampling: classifier-free guidance and top-k/top-p."""
from __future__ import annotations

import math

import torch

from ..core import sampling
from ..core.var import VAR
from ._check import CheckResult, Shortcut, _Case, _Mistake, _compare_tensor, _gen, _run, exercise

_SAMPLERS = [Shortcut(sampling, a) for a in ("cfg_strength", "guide", "filter_top_k_top_p", "sample_tokens")] + \
    [Shortcut(VAR, a) for a in ("generate_steps", "generate")]

exercise("top_k_top_p", "5.1",
         concept="Two filters cut the unlikely tail before sampling: top-k keeps the k largest logits; top-p keeps "
                 "the most likely tokens until their probability reaches p (the token that crosses p stays, so the best "
                 "token always stays). Removed logits become -inf; 0 switches a filter off; top-k acts first.",
         approach="top-k: find the k-th largest logit per position (logits.topk(k).values[..., -1:]) and mask what is "
                  "below it. top-p: softmax what is left, sort descending, the mass *before* each sorted token is "
                  "cumsum - p_sorted; remove where it is >= p; scatter the decision back to vocabulary order.",
         code="kth = x.topk(k, -1).values[..., -1:]; x = x.masked_fill(x < kth, -inf); probs, order = "
              "x.softmax(-1).sort(-1, descending=True); remove = (probs.cumsum(-1) - probs) >= p; "
              "x = x.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), -inf)",
         shortcuts=_SAMPLERS[2:3])
exercise("sample_scale", "5.2",
         concept="One step of VAR's sampler: the model ran the batch twice (true classes, then the unconditional "
                 "class); guidance pushes the conditional logits away from the unconditional ones, with a strength "
                 "that grows linearly from nothing at scale 1 to cfg at scale K; then the filter, then one random token "
                 "per position.",
         approach="Split logits_2BlV into cond (first B rows) and uncond (last B rows); t = cfg * si / (K - 1) "
                  "(0 if K == 1); guided = uncond + (1 + t) (cond - uncond); filter with your top_k_top_p; sample from "
                  "softmax with torch.multinomial(probs.view(-1, V), 1, replacement=True, generator=generator).",
         code="B = len(x) // 2; t = cfg * si / (K - 1) if K > 1 else 0.0; g = (1 + t) * x[:B] - t * x[B:]; "
              "g = top_k_top_p(g, top_k, top_p); return torch.multinomial(g.softmax(-1).view(-1, V), 1, "
              "replacement=True, generator=generator).view(B, l)",
         shortcuts=_SAMPLERS)


def _filter_case(seed: int, B: int, l: int, V: int):
    return torch.randn(B, l, V, generator=_gen(seed)) * 2.5


def check_top_k_top_p(top_k_top_p, verbose: bool = True) -> CheckResult:
    """``top_k_top_p(logits_BlV, top_k, top_p) -> (B, l, V)``: the logits with every token outside the top_k largest
    (if top_k > 0) and then outside the top-p nucleus (if top_p > 0) set to -inf. The nucleus is the smallest set of
    most likely tokens whose probability reaches top_p (computed on what top-k kept); the best token always stays.
    Reference: ``sampling.filter_top_k_top_p``."""
    specs = [(0, 0.0, 64), (5, 0.0, 64), (0, 0.9, 64), (10, 0.8, 64), (0, 1e-6, 64), (64, 0.5, 64), (7, 0.7, 50)]
    cases = [_Case(f"top_k={k}, top_p={p}, V={V}", (_filter_case(n, 2, 3, V), k, p), hidden=n == len(specs) - 1)
             for n, (k, p, V) in enumerate(specs)]

    def reference(logits, k, p):
        return sampling.filter_top_k_top_p(logits, k, p)

    def nucleus(logits, p, *, wrong_tail=False, keep_best=True, on_logits=False):
        probs = logits if on_logits else logits.softmax(-1)
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p          # mass of strictly better tokens
        remove = before < p if wrong_tail else before >= p
        if not keep_best:
            remove = sorted_p.cumsum(-1) > p
        out = torch.zeros_like(remove).scatter(-1, order, remove)
        return logits.masked_fill(out, -math.inf)

    def topk(logits, k, *, off=0, fill=-math.inf):
        if k <= 0:
            return logits
        kk = max(1, min(k + off, logits.shape[-1]))
        kth = logits.topk(kk, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, fill)

    def variant(logits, k, p, **kw):
        logits = topk(logits, k, off=kw.pop("off", 0), fill=kw.pop("fill", -math.inf))
        return nucleus(logits, p, **kw) if p > 0 else logits

    mistakes = [
        _Mistake("top-p keeping the wrong tail (the unlikely tokens instead of the likely ones)",
                 lambda x, k, p: variant(x, k, p, wrong_tail=True),
                 "Sort by probability *descending* and keep the head of the list until its mass reaches top_p; "
                 "everything after that is removed."),
        _Mistake("top-p stopping before the token that reaches top_p (kept mass < top_p; for a tiny top_p nothing "
                 "is left)",
                 lambda x, k, p: variant(x, k, p, keep_best=False),
                 "Keep a token while the mass of the tokens *before* it is < top_p: the token that crosses top_p stays, "
                 "and so the best token always stays, even for a tiny top_p."),
        _Mistake("the nucleus computed on the logits instead of the probabilities",
                 lambda x, k, p: variant(x, k, p, on_logits=True),
                 "Cumulate softmax(logits), not raw logits."),
        _Mistake("top-k keeping k + 1 tokens", lambda x, k, p: variant(x, k, p, off=1),
                 "Keep the k largest: logits below the k-th largest (topk(k).values[..., -1:]) become -inf."),
        _Mistake("top-k keeping k - 1 tokens", lambda x, k, p: variant(x, k, p, off=-1),
                 "Keep the k largest: logits below the k-th largest (topk(k).values[..., -1:]) become -inf."),
        _Mistake("filtered logits set to 0 instead of -inf", lambda x, k, p: variant(x, k, p, fill=0.0),
                 "A logit of 0 still has probability exp(0)/Z > 0; only -inf removes a token from the softmax."),
    ]
    return _run("top_k_top_p", top_k_top_p, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the filtered logits", atol=1e-6, names=("b", "token", "vocab")),
                mistakes, verbose=verbose)


def _sample_case(seed: int, B: int, l: int, V: int):
    return torch.randn(2 * B, l, V, generator=_gen(seed)) * 2.0


def _sample_variant(logits_2BlV, cfg, si, K, top_k, top_p, seed, *, ramp=True, sign=1, filter_first=False,
                    greedy=False, halves_swapped=False):
    """One sampling step with one step changed (for diagnosing mistakes); defaults reproduce the library."""
    B = logits_2BlV.shape[0] // 2
    cond, uncond = logits_2BlV[:B], logits_2BlV[B:]
    if halves_swapped:
        cond, uncond = uncond, cond
    t = sampling.cfg_strength(cfg, si, K) if ramp else cfg
    if filter_first:
        cond, uncond = (sampling.filter_top_k_top_p(x, top_k, top_p) for x in (cond, uncond))
        guided = (1 + t) * cond - t * uncond
        guided = torch.nan_to_num(guided, nan=-math.inf, posinf=-math.inf)
    else:
        guided = sampling.guide(torch.cat((cond, uncond)), sign * t) if sign == 1 else cond + sign * t * (cond - uncond)
        guided = sampling.filter_top_k_top_p(guided, top_k, top_p)
    if greedy:
        return guided.argmax(-1)
    return sampling.sample_tokens(guided, _gen(seed))


def _call_with_a_generator(fn, logits, cfg, si, K, k, p, seed):
    """The learner's step with a generator seeded ``seed`` (module level: in grading it travels by name)."""
    return fn(logits, cfg, si, K, k, p, _gen(seed))


def check_sample_scale(sample_scale, verbose: bool = True) -> CheckResult:
    """``sample_scale(logits_2BlV, cfg, si, num_scales, top_k, top_p, generator) -> idx_Bl`` (int64): one scale of
    VAR's sampler on the doubled batch (rows [:B] conditional, [B:] unconditional): guidance ramped with the scale,
    the top-k/top-p filter, one token per position drawn with ``torch.multinomial`` from ``generator``.
    Reference: ``sampling.cfg_strength``, ``guide``, ``filter_top_k_top_p`` and ``sample_tokens``, the calls of
    ``VAR.generate_steps``."""
    specs = [(1.5, 0, 10, 0, 0.0, False), (1.5, 9, 10, 0, 0.0, False), (4.0, 3, 7, 5, 0.0, False),
             (2.0, 2, 3, 0, 0.9, False), (3.0, 0, 1, 0, 0.0, False), (2.5, 5, 8, 8, 0.8, True)]
    cases = [_Case(f"cfg={cfg}, scale k={si + 1} of K={K}, top_k={k}, top_p={p}",
                   (_sample_case(n, 2, 6, 32), cfg, si, K, k, p, 100 + n), hidden=hidden)
             for n, (cfg, si, K, k, p, hidden) in enumerate(specs)]

    def reference(logits, cfg, si, K, k, p, seed):
        return _sample_variant(logits, cfg, si, K, k, p, seed)

    mistakes = [
        _Mistake("guidance with the sign flipped (steering *away* from the class)",
                 lambda *a: _sample_variant(*a, sign=-1),
                 "Guidance extrapolates from the unconditional towards the conditional prediction, and beyond it."),
        _Mistake("the two halves of the batch swapped (rows [:B] are the conditional ones)",
                 lambda *a: _sample_variant(*a, halves_swapped=True),
                 "VAR stacks the true labels first and the unconditional class second: cond = rows [:B]."),
        _Mistake("no ramp (the full cfg at every scale)", lambda *a: _sample_variant(*a, ramp=False),
                 "The strength grows linearly with the scale: nothing at the first scale, cfg at the last."),
        _Mistake("filtering before guidance", lambda *a: _sample_variant(*a, filter_first=True),
                 "Guide first, then filter the guided logits: the filter decides on the distribution you sample from."),
        _Mistake("the most likely token instead of a sample", lambda *a: _sample_variant(*a, greedy=True),
                 "Draw one token per position with torch.multinomial from softmax(logits), using the generator."),
    ]
    return _run("sample_scale", sample_scale, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the tokens", names=("b", "token"),
                                                 kind_hint="Return token indices (int64), not logits."),
                mistakes, success="This is one step of generate_steps: the whole sampler is this, K times.",
                verbose=verbose, call=_call_with_a_generator)
