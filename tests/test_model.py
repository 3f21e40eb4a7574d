"""Core model behaviour: shapes, the quantizer's rules, training-only class dropout, generation, input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from varlite.core.configs import VARConfig, VQVAEConfig, get_preset
from varlite.core.quantizer import PhiPartiallyShared
from varlite.core.var import VAR, block_causal_bias
from varlite.core.vqvae import VQVAE


def test_phi_tick_rule_matches_upstream_float64_ties():
    """Derived by hand, in 36ths: the 4 ticks linspace(1/12, 11/12, 4) are 3, 13, 23, 33, and scale si of K = 10
    sits at si/9 = 4 si. The nearest tick gives the conv; si = 2 (at 8) and si = 7 (at 28) lie exactly half-way
    between two ticks, and upstream's float64 rounding sends them to conv 1 and conv 3."""
    ticks_36 = [3, 13, 23, 33]
    distances_36 = [            # |4 si - tick| for every scale si (rows) and tick (columns)
        [3, 13, 23, 33],        # si 0 -> conv 0
        [1, 9, 19, 29],         # si 1 -> conv 0
        [5, 5, 15, 25],         # si 2 -> tie 0 / 1: conv 1 (float64)
        [9, 1, 11, 21],         # si 3 -> conv 1
        [13, 3, 7, 17],         # si 4 -> conv 1
        [17, 7, 3, 13],         # si 5 -> conv 2
        [21, 11, 1, 9],         # si 6 -> conv 2
        [25, 15, 5, 5],         # si 7 -> tie 2 / 3: conv 3 (float64)
        [29, 19, 9, 1],         # si 8 -> conv 3
        [33, 23, 13, 3],        # si 9 -> conv 3
    ]
    expected_K10 = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    phis = PhiPartiallyShared(torch.nn.ModuleList([torch.nn.Identity()] * 4))
    np.testing.assert_allclose(phis.ticks * 36, ticks_36, rtol=1e-12)
    for si in range(10):
        np.testing.assert_allclose(np.abs(si / 9 - phis.ticks) * 36, distances_36[si], rtol=1e-12, atol=1e-12)
        nearest = [conv for conv, d in enumerate(distances_36[si]) if d == min(distances_36[si])]
        assert expected_K10[si] in nearest and (len(nearest) == 2) == (si in (2, 7))
    assert [phis.index_for(si, 10) for si in range(10)] == expected_K10
    assert [phis.index_for(si, 4) for si in range(4)] == [0, 1, 2, 3]   # K = 4: positions 0, 12, 24, 36


def test_shapes_through_the_tokenizer_and_transformer(tiny_models, ref_cases):
    vqvae, var = tiny_models
    img = torch.from_numpy(ref_cases["input_img"])
    with torch.no_grad():
        ms_idx = vqvae.img_to_idx(img)
        assert [tuple(t.shape) for t in ms_idx] == [(2, 1), (2, 4), (2, 9), (2, 16)]
        x = vqvae.idx_to_var_input(ms_idx)
        assert x.shape == (2, 30 - 1, 8)
        assert var(torch.tensor([3, 7]), x).shape == (2, 30, 64)
        prefixes = vqvae.idx_to_img(ms_idx, every_prefix=True)
        assert len(prefixes) == 4 and all(p.shape == (2, 3, 64, 64) for p in prefixes)
        assert torch.equal(prefixes[-1], vqvae.idx_to_img(ms_idx))


def test_block_causal_mask():
    bias = block_causal_bias((1, 2))[0, 0]          # tokens: [s0 | s1 s1 s1 s1]
    allowed = bias == 0
    assert allowed[0].tolist() == [True, False, False, False, False]
    assert allowed[1:].all()                         # scale 1 sees scale 0 and all of scale 1


def test_class_dropout_only_in_training(ref_state_dicts, ref_cases):
    preset = get_preset("tiny")
    vqvae = VQVAE(preset.vqvae)
    vqvae.load_state_dict(ref_state_dicts[0])
    var = VAR(VARConfig(**{**preset.var.__dict__, "cond_drop_rate": 1.0}), vqvae)
    var.load_state_dict(ref_state_dicts[1])
    x = torch.from_numpy(ref_cases["var_input"])
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        eval_logits = var.eval()(labels, x)
        assert torch.allclose(eval_logits, torch.from_numpy(ref_cases["tf_logits"]), atol=1e-5)
        train_logits = var.train()(labels, x)      # every label dropped -> the unconditional class
        uncond = var.eval()(torch.tensor([10, 10]), x)
    assert torch.equal(train_logits, uncond)


def test_generation_is_deterministic_by_seed(tiny_models):
    _, var = tiny_models
    a = var.generate([0, 5], cfg=1.5, top_k=10, top_p=0.9, seed=3)
    b = var.generate([0, 5], cfg=1.5, top_k=10, top_p=0.9, seed=3)
    c = var.generate([0, 5], cfg=1.5, top_k=10, top_p=0.9, seed=4)
    assert a.shape == (2, 3, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_smoothing_runs_and_is_seeded(tiny_models):
    _, var = tiny_models
    a = var.generate([2], more_smooth=True, seed=1)
    assert torch.equal(a, var.generate([2], more_smooth=True, seed=1))


def test_wrong_image_size_says_what_is_expected(tiny_models):
    vqvae, _ = tiny_models
    with pytest.raises(ValueError, match=r"expected an image batch of shape \(B, 3, 64, 64\).*got shape \(1, 3, 32, 32\).*prepare_image"):
        vqvae.img_to_idx(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 64, 64\)"):
        vqvae.img_to_idx(torch.zeros(1, 1, 64, 64))


def test_mismatched_configs_are_refused():
    vqvae = VQVAE(get_preset("tiny").vqvae)
    with pytest.raises(ValueError, match="does not match the VQVAE"):
        VAR(VARConfig(vocab_size=64, z_channels=8, patch_nums=(1, 2, 4), depth=1, embed_dim=64, num_heads=1), vqvae)
    with pytest.raises(ValueError, match="multiple of 32"):
        VQVAEConfig(ch=48)


def test_tokenizer_training_pass_has_straight_through_gradients():
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(vocab_size=16, z_channels=4, ch=32, ch_mult=(1, 1), patch_nums=(1, 2, 4),
                              using_sa=False)).train()
    img = torch.rand(2, 3, 8, 8) * 2 - 1
    recon, vq_loss, ms_idx = vqvae(img)
    assert recon.shape == img.shape and vq_loss.ndim == 0 and [t.shape[1] for t in ms_idx] == [1, 4, 16]
    ((recon - img).square().mean() + vq_loss).backward()
    for name in ("encoder.conv_in.weight", "decoder.conv_out.weight", "quantize.embedding.weight",
                 "quantize.quant_resi.qresi_ls.0.weight"):
        grad = dict(vqvae.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_upsample_as_four_2x2_convs_equals_nearest_upsampling_then_3x3_conv():
    """Upsample2x computes conv3x3(nearest 2x upsampling) as four 2x2 convs of the small map: the same values and
    gradients as the literal formula (to float rounding), in the input's memory format."""
    from varlite.core.vqvae import Upsample2x
    torch.manual_seed(0)
    up = Upsample2x(16)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    literal = up.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    weights = torch.randn_like(literal)
    grads_literal = torch.autograd.grad((literal * weights).sum(), (x, up.conv.weight, up.conv.bias))
    fast = up(x)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (x, up.conv.weight, up.conv.bias))
    assert fast.shape == (2, 16, 10, 14)
    torch.testing.assert_close(fast, literal, rtol=0, atol=2e-6)
    for g_fast, g_literal in zip(grads_fast, grads_literal):
        torch.testing.assert_close(g_fast, g_literal, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        fast_cl = up(x.contiguous(memory_format=torch.channels_last))
    assert fast_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast_cl, fast.detach(), rtol=0, atol=2e-6)
    # the 3x3 kernel's nine taps are folded into 2x2 per output phase: every tap lands once in each phase's rows
    assert Upsample2x.FOLD.sum(dim=1).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_in_place_inference_ops_give_the_training_path_values(tiny_models):
    """The decoder's in-place SiLU / skip add and the FFN's in-place GELU (inference only) change no value: the
    tokenizer's reconstruction and VAR's logits are equal with and without autograd, and the decoder's backward
    still runs (autograd keeps none of the overwritten tensors)."""
    vqvae, var = tiny_models
    torch.manual_seed(0)
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        recon_no_grad = vqvae.reconstruct(img)
        x_in = vqvae.idx_to_var_input(vqvae.img_to_idx(img))
        logits_no_grad = var(torch.tensor([3, 7]), x_in)
    with torch.enable_grad():
        f_hat = vqvae.img_to_f_hats(img)[-1].detach().requires_grad_(True)
        recon = vqvae.f_hat_to_img(f_hat)
        recon.sum().backward()
        logits = var(torch.tensor([3, 7]), x_in)
    assert torch.equal(recon.detach(), recon_no_grad)
    assert torch.equal(logits.detach(), logits_no_grad)
    assert f_hat.grad is not None and f_hat.grad.abs().sum() > 0


def test_greedy_generation_takes_the_argmax_without_drawing(tiny_models, monkeypatch):
    """top_k=1: the token is the argmax (what a draw from the one-token distribution gives), and no random draw is
    made; with more_smooth the draw stays (the smoothing noise comes from the same generator)."""
    from varlite.core import sampling
    _, var = tiny_models
    draws = []
    real_multinomial = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda *args, **kw: draws.append(1) or real_multinomial(*args, **kw))
    steps = list(var.generate_steps([3, 7], cfg=1.5, top_k=1, seed=0))
    assert draws == []
    for step in steps:
        filtered = sampling.filter_top_k_top_p(step.logits, top_k=1)
        drawn = sampling.sample_tokens(filtered, torch.Generator().manual_seed(123))
        assert torch.equal(step.tokens.flatten(1), drawn)
    draws.clear()
    list(var.generate_steps([3, 7], cfg=1.5, top_k=1, more_smooth=True, seed=0))
    assert len(draws) == len(var.patch_nums)
