"""varlite.baselines: the raster-order AR model, independent per-scale tokens, the power-law fit (lesson 12 and
recipes/reproduce.py build on them)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varlite.baselines import (IndependentScaleQuantizer, RasterAR, ar_loss, causal_bias, fit_power_law,
                               independent_vqvae, sample_by_refeeding, var_loss)
from varlite.core.configs import get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE

TINY = get_preset("tiny")          # 64 codes, Cv = 8, patch_nums (1, 2, 3, 4), 64-px images


def single_scale_pair(depth: int = 2):
    torch.manual_seed(0)
    vqvae = VQVAE(dataclasses.replace(TINY.vqvae, patch_nums=(4,))).eval()
    model = RasterAR(dataclasses.replace(TINY.var, patch_nums=(4,), depth=depth), vqvae)
    model.init_weights()
    with torch.no_grad():                      # init_weights makes the head tiny; larger logits test more
        model.head.weight.normal_(0, 0.5)
    return vqvae, model.eval()


def test_causal_bias_is_lower_triangular():
    bias = causal_bias(3)[0, 0]
    assert bias.shape == (3, 3)
    assert torch.equal(bias == 0, torch.tensor([[True, False, False], [True, True, False], [True, True, True]]))
    assert torch.isinf(bias[0, 2]) and bias[0, 2] < 0


def test_raster_ar_logits_shape_and_parameters_match_var_blocks():
    vqvae, ar = single_scale_pair()
    logits = ar(torch.tensor([0, 3]), torch.randint(0, 64, (2, 16)))
    assert logits.shape == (2, 16, 64)
    var = VAR(dataclasses.replace(TINY.var, depth=2), VQVAE(TINY.vqvae))
    # same blocks, head and embeddings; only the position tables differ (L = 16 here, 30 for the 4 scales)
    assert sum(p.numel() for p in ar.blocks.parameters()) == sum(p.numel() for p in var.blocks.parameters())
    var_extra = sum(p.numel() for n, p in var.named_parameters() if n.startswith(("lvl_embed", "pos_1LC")))
    assert sum(p.numel() for p in var.parameters()) - var_extra == \
        sum(p.numel() for p in ar.parameters()) - ar.pos_1LC.numel()


def test_raster_ar_is_causal():
    """Changing token j changes the logits of positions after j only (position i predicts r_i from r_<i)."""
    _, ar = single_scale_pair()
    labels = torch.tensor([1])
    idx = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % 64
    a, b = ar(labels, idx), ar(labels, changed)
    assert torch.equal(a[:, :6], b[:, :6])            # positions 0..5 never see token 5 as input
    assert (a[:, 6:] - b[:, 6:]).abs().amax(dim=-1).min() > 0     # every later position does


def test_raster_ar_rejects_a_multi_scale_tokenizer():
    with pytest.raises(ValueError, match="single-scale tokenizer"):
        RasterAR(dataclasses.replace(TINY.var, patch_nums=(4,)), VQVAE(TINY.vqvae))


def test_raster_ar_generate_with_kv_cache_agrees_with_the_teacher_forced_pass():
    """Greedy generation (top-k 1, no guidance) must pick, at every position, the argmax of the full causal pass
    run on its own output: the KV-cached loop computes the same logits as the masked forward."""
    _, ar = single_scale_pair()
    labels = torch.tensor([2, 7, 9])
    images, idx_BL = ar.generate(labels, cfg=0.0, top_k=1, seed=0)
    assert images.shape == (3, 3, 64, 64) and 0 <= float(images.min()) and float(images.max()) <= 1
    with torch.no_grad():
        assert torch.equal(ar(labels, idx_BL.clone()).argmax(-1), idx_BL)


def test_ar_and_var_losses_are_the_mean_cross_entropy():
    _, ar = single_scale_pair()
    labels, idx = torch.tensor([0, 1]), torch.randint(0, 64, (2, 16))
    expected = F.cross_entropy(ar(labels, idx).flatten(0, 1), idx.flatten())
    assert torch.allclose(ar_loss(ar, labels, idx), expected)
    vqvae = VQVAE(TINY.vqvae)
    var = VAR(dataclasses.replace(TINY.var, cond_drop_rate=0.0), vqvae).eval()
    idx_BL = torch.randint(0, 64, (2, 30))
    x = vqvae.idx_to_var_input([idx_BL[:, b:e] for b, e in var.begin_ends])
    assert torch.allclose(var_loss(var, labels, idx_BL), F.cross_entropy(var(labels, x).flatten(0, 1), idx_BL.flatten()))


# ------------------------------------------------------------------------------------------ independent tokens
def independent_quantizer():
    torch.manual_seed(0)
    quantizer = IndependentScaleQuantizer(TINY.vqvae).eval()
    with torch.no_grad():
        quantizer.embedding.weight.normal_()
    return quantizer


def test_independent_scales_quantize_f_itself_not_the_rest():
    quantizer = independent_quantizer()
    f = torch.randn(2, 8, 4, 4)
    steps = list(quantizer.residual_steps(f))
    for si, (pn, step) in enumerate(zip(quantizer.patch_nums, steps)):
        z = F.interpolate(f, size=(pn, pn), mode="area")
        assert torch.allclose(step.target, z)                         # the downsampled f, whatever came before
        d = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 8), quantizer.embedding.weight)
        assert torch.equal(step.tokens.flatten(), d.argmin(dim=1))
        own = quantizer.upsample_and_phi(quantizer.embedding(step.tokens).permute(0, 3, 1, 2), si)
        assert torch.allclose(step.f_hat, own)                        # f_hat_k is scale k's own approximation
        assert torch.allclose(step.rest, f - own, atol=1e-6)     # f - f_hat near 0: float noise of the conv
    residual = list(super(IndependentScaleQuantizer, quantizer).residual_steps(f))
    assert torch.equal(residual[0].tokens, steps[0].tokens)           # scale 1: nothing explained yet, same tokens
    assert not torch.equal(residual[1].target, steps[1].target)       # then the residual rule quantizes the rest


def test_independent_tokens_decode_and_feed_the_transformer_scale_by_scale():
    quantizer = independent_quantizer()
    f = torch.randn(2, 8, 4, 4)
    steps = list(quantizer.residual_steps(f))
    ms_idx_Bl = [s.tokens.flatten(1) for s in steps]
    for f_hat, step in zip(quantizer.idx_to_f_hats(ms_idx_Bl), steps):
        assert torch.allclose(f_hat, step.f_hat)
    x = quantizer.idx_to_var_input(ms_idx_Bl)
    assert x.shape == (2, 4 + 9 + 16, 8)
    expected = torch.cat([F.interpolate(steps[si].f_hat, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)
                          for si, pn in enumerate(quantizer.patch_nums[1:])], dim=1)
    assert torch.allclose(x, expected)


def test_independent_vqvae_keeps_the_parameter_names_and_trains_every_scale():
    vqvae = independent_vqvae(TINY.vqvae)
    assert isinstance(vqvae.quantize, IndependentScaleQuantizer)
    assert list(vqvae.state_dict()) == list(VQVAE(TINY.vqvae).state_dict())
    recon, vq_loss, ms_idx_Bl = vqvae(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert recon.shape == (2, 3, 64, 64) and [m.shape[1] for m in ms_idx_Bl] == [1, 4, 9, 16]
    vq_loss.backward()
    assert all(vqvae.quantize.quant_resi.qresi_ls[i].weight.grad.abs().sum() > 0
               for i in {vqvae.quantize.quant_resi.index_for(si, 4) for si in range(4)})


def test_sampling_by_refeeding_draws_what_the_kv_cached_generation_draws():
    torch.manual_seed(0)
    vqvae = VQVAE(TINY.vqvae).eval()
    var = VAR(TINY.var, vqvae).eval()
    var.init_weights()
    with torch.no_grad():
        var.head.weight.normal_(0, 0.5)
    generated = list(var.generate_steps([1, 4], cfg=1.5, top_k=10, seed=3))
    images, ms_idx_Bl = sample_by_refeeding(var, [1, 4], cfg=1.5, top_k=10, seed=3)
    for step, idx_Bl in zip(generated, ms_idx_Bl):
        assert torch.equal(step.tokens.flatten(1), idx_Bl)
    assert torch.allclose(images, generated[-1].image(), atol=1e-5)


# ------------------------------------------------------------------------------------------ the fit
def test_power_law_fit_recovers_an_exact_law():
    n = [1e4, 3e4, 1e5, 4e5]
    fit = fit_power_law(n, [3.0 * x ** -0.1 for x in n])
    assert fit.a == pytest.approx(3.0, rel=1e-9) and fit.b == pytest.approx(-0.1, rel=1e-9)
    assert fit.r == pytest.approx(-1.0, abs=1e-12)
    assert fit.predict(1e6) == pytest.approx(3.0 * 1e6 ** -0.1)


def test_power_law_fit_correlation_is_pearsons_on_the_logs():
    n, loss = [1e4, 2e4, 5e4, 1e5, 3e5], [2.0, 1.7, 1.75, 1.5, 1.45]
    fit = fit_power_law(n, loss)
    assert fit.r == pytest.approx(np.corrcoef(np.log(n), np.log(loss))[0, 1], abs=1e-12)
    slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)
    assert fit.b == pytest.approx(slope) and math.log(fit.a) == pytest.approx(intercept)


@pytest.mark.parametrize("n, loss, message", [
    ([1e4], [2.0], "at least 2"),
    ([1e4, 2e4], [2.0], "as many losses"),
    ([1e4, 1e4], [2.0, 1.0], "two different model sizes"),
    ([0, 1e4], [2.0, 1.0], "positive"),
])
def test_power_law_fit_refuses_what_it_cannot_fit(n, loss, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(n, loss)


def test_raster_ar_file_round_trip(tmp_path):
    from varlite.baselines import load_raster_ar, save_raster_ar
    _, ar = single_scale_pair()
    save_raster_ar(tmp_path / "ar.pt", ar)
    loaded = load_raster_ar(tmp_path / "ar.pt")
    assert loaded.config == ar.config and loaded.vqvae.config == ar.vqvae.config
    for (name, a), (_, b) in zip(ar.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.half().float() if a.is_floating_point() else a, b), name     # float16 storage
    assert loaded.generate([3], cfg=0.0, top_k=1, seed=0)[1].shape == (1, 16)


# ------------------------------------------------------------------------------------------ reading the results
def test_results_table_and_cpu_total():
    from varlite.reproduction import cpu_report, format_table
    assert format_table([{"model": "VAR", "parameters": 1279376}, {"model": "AR", "parameters": 64}]).splitlines() == [
        "model  parameters", "-----  ----------", "  VAR   1,279,376", "   AR          64"]
    load = {"loadavg_1_5_15": [3.0, 2.0, 1.0]}
    results = {"stages": {
        "tok-single": {"train_cpu_s": 180.0, "stage_cpu_s_this_segment": 95.5, "stage_wall_s": 236.0,
                       "load_at_start": load},                            # resumed: training spans 3 segments
        "var-builtin": {"train_cpu_s": 636.0, "note": "built-in", "stage_cpu_s_this_segment": 20.0,
                        "stage_wall_s": 30.0, "load_at_start": load},     # evaluated only: its training not counted
        "summary-like": {"fits": {}}}}
    table, total = cpu_report(results)
    assert total == 200.0
    assert table.splitlines()[3].split() == ["var-builtin", "-", "20.0", "30.0", "3.0"]


def test_missing_results_say_how_to_make_them(tmp_path):
    from varlite.reproduction import load_results
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        load_results(tmp_path)
