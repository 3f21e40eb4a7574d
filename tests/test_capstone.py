"""Lesson 10's capstone checks: the first difference of the generation loop is reported in the order the loop makes
it, and the catalogued mistakes of the capstone's own pieces are named (varlite/exercises/capstone_mistakes.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varlite import exercises as ex

from .test_exercises import capstone_namespace


def _with(source: str) -> dict:
    """The reference solution's namespace with ``source`` run in it (a learner's changed piece); ``solution`` holds
    the correct pieces."""
    namespace = capstone_namespace()
    namespace.update(np=np, F=F, torch=torch, solution=dict(namespace))
    exec(source, namespace)
    return namespace


def test_generate_reports_scale_one_tokens_before_scale_two_logits():
    """A sampler that misses the argmax at scale 1 only: scale 1's raw logits still match, its tokens do not, and
    every later logit differs because of them. The report names the tokens of scale 1."""
    namespace = _with("def top_k_top_p(x, k, p):\n"
                      "    if x.shape[1] == 1:\n"
                      "        x = x.scatter(-1, x.argmax(-1, keepdim=True), -torch.inf)\n"
                      "    return solution['top_k_top_p'](x, k, p)\n")
    result = ex.check_generate(namespace["generate"], verbose=False)
    assert result.status == "wrong"
    assert "the greedy run's tokens, scale 1" in result.message and "raw logits" not in result.message.splitlines()[0]


# (piece, the learner's changed definition, the catalogue's name for it)
NAMED = {
    "phi index off by one": (
        "phi_of_scale", "def phi_of_scale(h, si, K, W):\n"
        "    i = int(np.argmin(np.abs(np.linspace(1 / 12, 11 / 12, 4) - (si + 1) / (K - 1))))\n"
        "    p = f'quantize.quant_resi.qresi_ls.{i}.'\n"
        "    return 0.5 * h + 0.5 * F.conv2d(h, W[p + 'weight'], W[p + 'bias'], padding=1)\n",
        "the relative position k / (K - 1) with the 1-based k"),
    "phi without the blend": (
        "phi_of_scale", "def phi_of_scale(h, si, K, W):\n    return 2 * solution['phi_of_scale'](h, si, K, W) - h\n",
        "the convolution without the blend with the identity"),
    "phi before upsampling, encoding": (
        "encode_tokens", "def _contribution(idx, si, W, pn):\n"
        "    E, H = W['quantize.embedding.weight'], pn[-1]\n"
        "    h = E[idx].transpose(1, 2).reshape(idx.shape[0], -1, pn[si], pn[si])\n"
        "    h = phi_of_scale(h, si, len(pn), W)\n"
        "    return h if pn[si] == H else F.interpolate(h, size=(H, H), mode='bicubic')\n",
        "phi applied before upsampling"),
    "the answer leaking into the input": (
        "var_input", "def var_input(maps, W, pn):\n"
        "    f_hat, out = 0, []\n"
        "    for si in range(len(pn) - 1):\n"
        "        f_hat = f_hat + _contribution(maps[si], si, W, pn)\n"
        "        seen = f_hat + _contribution(maps[si + 1], si + 1, W, pn)\n"
        "        out.append(F.interpolate(seen, size=(pn[si + 1],) * 2, mode='area').flatten(2).transpose(1, 2))\n"
        "    return torch.cat(out, 1)\n",
        "each scale's input built from f_hat including its own tokens"),
    "reversed CFG ramp": (
        "guided_logits", "def guided_logits(x, cfg, si, K):\n"
        "    return solution['guided_logits'](x, cfg, K - 1 - si, K)\n",
        "the guidance ramp reversed"),
    "no CFG ramp": (
        "guided_logits", "def guided_logits(x, cfg, si, K):\n    return solution['guided_logits'](x, cfg, K - 1, K)\n",
        "no guidance ramp"),
    "guidance away from the class": (
        "guided_logits", "def guided_logits(x, cfg, si, K):\n"
        "    B = len(x) // 2\n"
        "    return solution['guided_logits'](torch.cat([x[B:], x[:B]]), cfg, si, K)\n",
        "conditional and unconditional rows swapped"),
}


@pytest.mark.parametrize("mistake", sorted(NAMED))
def test_a_catalogued_mistake_is_named(mistake):
    piece, source, name = NAMED[mistake]
    namespace = _with(source)
    result = getattr(ex, f"check_{piece}")(namespace[piece], verbose=False)
    assert result.status == "wrong", result.message
    diagnosis = [line.strip() for line in result.message.splitlines() if line.strip().startswith("Diagnosis:")]
    assert len(diagnosis) == 1 and f"this is exactly what {name}" in diagnosis[0], result.message
    assert "Hint 1" not in result.message      # the diagnosis replaces the generic idea


def test_the_whole_report_carries_the_diagnosis_and_the_first_difference():
    piece, source, name = NAMED["phi index off by one"]
    report = ex.check_my_var(_with(source), verbose=False)
    assert report.first_difference == "phi_of_scale"
    detail = dict((row[0], row[3]) for row in report.rows)["phi_of_scale"]
    assert f"diagnosis: this is exactly what {name}" in detail


def test_an_unknown_wrong_answer_gets_the_idea_not_a_diagnosis():
    namespace = _with("def guided_logits(x, cfg, si, K):\n    return solution['guided_logits'](x, cfg, si, K) + 1e-2\n")
    result = ex.check_guided_logits(namespace["guided_logits"], verbose=False)
    assert result.status == "wrong" and "Diagnosis:" not in result.message and "Hint 1 (the idea)" in result.message
