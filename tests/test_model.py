"""Core model behaviour: shapes, the quantizer's rules, training-only class dropout, generation, input errors."""
from __future__ import annotations

import pytest
import torch

from varlite.configs import VARConfig, VQVAEConfig, get_preset
from varlite.quantizer import PhiPartiallyShared
from varlite.var import VAR, block_causal_bias
from varlite.vqvae import VQVAE


def test_phi_tick_rule_matches_upstream_float64_ties():
    phis = PhiPartiallyShared(torch.nn.ModuleList([torch.nn.Identity()] * 4))
    assert [phis.index_for(si, 10) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]   # si=2, 7 are ties
    assert [phis.index_for(si, 4) for si in range(4)] == [0, 1, 2, 3]


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


def test_kv_cached_generation_equals_teacher_forcing(tiny_models):
    """The logits of the step-wise, cached generation equal VAR.forward on the generated tokens."""
    vqvae, var = tiny_models
    labels = torch.tensor([1, 8])
    steps = list(var.generate_steps(labels, cfg=2.0, top_k=3, seed=5))
    ms_idx = [s.tokens.flatten(1) for s in steps]
    with torch.no_grad():
        tf_cond = var(labels, vqvae.idx_to_var_input(ms_idx))
        tf_uncond = var(torch.full_like(labels, 10), vqvae.idx_to_var_input(ms_idx))
    cached = torch.cat([s.raw_logits for s in steps], dim=1)
    assert (cached[:2] - tf_cond).abs().max() < 1e-5
    assert (cached[2:] - tf_uncond).abs().max() < 1e-5


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


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=[11]), r"label 11 is out of range: this model has 10 classes"),
    (dict(labels=[-1]), r"label -1 is out of range"),
    (dict(labels=[0.5]), r"labels must be a non-empty 1-D sequence of ints"),
    (dict(labels=[1], cfg=-0.1), r"cfg must be >= 0"),
    (dict(labels=[1], top_k=-1), r"top_k must be an int in \[0, 64\]"),
    (dict(labels=[1], top_k=65), r"top_k must be an int in \[0, 64\]"),
    (dict(labels=[1], top_p=1.5), r"top_p must be in \[0, 1\]"),
])
def test_bad_generation_arguments(tiny_models, kwargs, message):
    _, var = tiny_models
    with pytest.raises(ValueError, match=message):
        var.generate(**kwargs)


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


@pytest.mark.parametrize("overrides, message", [
    ({4: (torch.zeros(1, 1), torch.ones(1, 1))}, r"scale keys must be ints in \[0, 3\].*got \[4\]"),
    ({2: (torch.zeros(3, 2), torch.ones(3, 2))}, r"tokens must have shape \(3, 3\) or \(B, 3, 3\)"),
    ({1: (torch.zeros(2, 2), torch.ones(5, 2, 2))}, r"keep must have shape .* B = 1 or 2; got \(5, 2, 2\)"),
    ({1: (torch.full((2, 2), 64), torch.ones(2, 2))}, r"token indices must be in \[0, 63\]"),
])
def test_bad_overrides(tiny_models, overrides, message):
    _, var = tiny_models
    with pytest.raises(ValueError, match=message):
        list(var.generate_steps([1, 2], overrides=overrides))
