"""The CPU-first CIFAR-10 recipe (issue 9): its presets, bf16 training, the token cache with flips, the judge,
--init-from a shipped model, the Frechet distance."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from varlite.builtin import load_builtin
from varlite.core.configs import CIFAR10_CANDIDATES, get_preset
from varlite.data import load_dataset
from varlite.safe_io import CheckpointError
from varlite.train.classifier import ClassifierTrainConfig, ClassifierTrainer, DeepCNN, load_classifier, translate
from varlite.train.metrics import frechet_distance
from varlite.train.tokenizer import TokenizerTrainer, load_tokenizer
from varlite.train.transformer import TokenCache, VarTrainer
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE

from .test_train import folder, micro_preset_one_thread, tok_config, tokenizer_run, var_config  # noqa: F401 (fixtures)


@pytest.mark.parametrize("name", sorted(CIFAR10_CANDIDATES))
def test_recipe_presets_build_an_8x8_latent_of_155_tokens(name):
    preset = get_preset(name)
    depth, width, heads = CIFAR10_CANDIDATES[name]
    assert (preset.var.depth, preset.var.embed_dim, preset.var.num_heads) == (depth, width, heads)
    assert preset.var.L == 1 + 4 + 9 + 16 + 25 + 36 + 64 == 155
    assert preset.vqvae.downsample == 4 and preset.vqvae.image_size == 32
    vqvae = VQVAE(preset.vqvae).eval()
    var = VAR(preset.var, vqvae).eval()
    idx = vqvae.img_to_idx(torch.zeros(2, 3, 32, 32))
    assert [tuple(i.shape) for i in idx] == [(2, pn * pn) for pn in (1, 2, 3, 4, 5, 6, 8)]
    logits = var(torch.tensor([0, 9]), vqvae.idx_to_var_input(idx))
    assert logits.shape == (2, 155, 1024)


def test_token_cache_with_flips_holds_the_flipped_images_tokens(folder, tokenizer_run, tmp_path):
    dataset = load_dataset("folder", "train", str(folder))
    N = len(dataset)
    vqvae, _ = load_tokenizer(tokenizer_run)
    cache = TokenCache(vqvae, dataset, tmp_path / "tokens.pt", hflip=True)
    assert cache.idx_NL.shape == (2 * N, 21)
    tokens = cache.get(torch.tensor([2, N + 2]))
    img = dataset[2][0][None]
    assert torch.equal(tokens[0], torch.cat(vqvae.img_to_idx(img), dim=1)[0])
    assert torch.equal(tokens[1], torch.cat(vqvae.img_to_idx(img.flip(-1)), dim=1)[0])
    assert not torch.equal(tokens[0], tokens[1])
    assert cache.labels(torch.tensor([2, N + 2])).tolist() == [dataset.labels[2].item()] * 2
    cache.save()
    assert TokenCache(vqvae, dataset, tmp_path / "tokens.pt", hflip=True).num_encoded == 2
    assert TokenCache(vqvae, dataset, tmp_path / "tokens.pt").num_encoded == 0   # a plain cache is another shape


def test_token_cache_encodes_in_float32_inside_a_bf16_autocast(folder, tokenizer_run):
    dataset = load_dataset("folder", "train", str(folder))
    vqvae, _ = load_tokenizer(tokenizer_run)
    plain = TokenCache(vqvae, dataset).get(torch.arange(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = TokenCache(vqvae, dataset).get(torch.arange(8))
    assert torch.equal(plain, under_autocast)


def test_bf16_smoke_runs_of_both_stages_and_the_judge(folder, tmp_path):
    tok = TokenizerTrainer(tok_config(tmp_path / "tok", folder, steps=2, precision="bf16")).run()
    assert tok.finished and np.isfinite(tok.metrics["psnr"])
    var = VarTrainer(var_config(tmp_path / "var", folder, tmp_path / "tok", steps=2, precision="bf16", hflip=True)).run()
    assert var.finished and np.isfinite(var.metrics["val_loss"])
    cache = torch.load(tmp_path / "var" / "tokens_train.pt", weights_only=True)["idx_NL"]
    assert cache.shape == (80, 21) and int((cache[:, 0] >= 0).sum()) == 16        # 2 steps x 8 rows, some flipped
    judge = ClassifierTrainer(ClassifierTrainConfig(
        run_dir=str(tmp_path / "judge"), dataset="folder", data_root=str(folder), arch="deep", width=8, steps=2,
        batch_size=8, hflip=True, translate=2, label_smoothing=0.1, precision="bf16", progress=False, warmup_steps=1,
        eval_images=10)).run()
    assert 0 <= judge.metrics["test_acc"] <= 1
    model, config = load_classifier(tmp_path / "judge")
    assert isinstance(model, DeepCNN) and config["arch"] == "deep"
    assert model.features(torch.zeros(3, 3, 32, 32)).shape == (3, 32)


def test_precision_must_be_fp32_bf16_or_auto(folder, tmp_path):
    with pytest.raises(ValueError, match="--precision must be fp32, bf16 or auto, got 'fp16'"):
        tok_config(tmp_path, folder, precision="fp16")


def test_translate_shifts_each_image_by_at_most_the_given_pixels():
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = translate(img, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2), mode="reflect")
    for b in range(2):
        crops = [padded[b, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert sum(torch.equal(out[b], c) for c in crops) == 1


@pytest.mark.parametrize("name", ["shapes", "cifar10"])
def test_init_from_a_builtin_continues_the_shipped_model(name, folder, tmp_path):
    from varlite.train.transformer import VarTrainConfig
    data = {"dataset": "shapes"} if name == "shapes" else {"dataset": "folder", "data_root": str(folder)}
    config = dict(run_dir=str(tmp_path / "run"), preset=name, tokenizer=f"builtin:{name}", steps=2, batch_size=8,
                  eval_every=0, sample_every=0, ckpt_every=2, eval_images=40, progress=False, warmup_steps=1,
                  lr=1e-5, init_from=f"builtin:{name}", **data)
    trainer = VarTrainer(VarTrainConfig(**config))
    _, shipped = load_builtin(name)
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), shipped.state_dict().values()))
    continued = trainer.run().metrics["val_loss"]
    fresh = VarTrainer(VarTrainConfig(**{**config, "run_dir": str(tmp_path / "fresh"), "init_from": ""})).run()
    assert continued < fresh.metrics["val_loss"] - 0.5      # the shipped model predicts far better than a new one


def test_init_from_needs_the_same_preset_and_tokenizer(folder, tokenizer_run, tmp_path):
    with pytest.raises(CheckpointError, match="its configs differ from preset 'test-micro'"):
        VarTrainer(var_config(tmp_path / "a", folder, tokenizer_run, init_from="builtin:shapes"))
    with pytest.raises(CheckpointError, match="has a different VQVAE config than preset 'test-micro'"):
        VarTrainer(var_config(tmp_path / "b", folder, "builtin:shapes"))


def test_frechet_distance_matches_scipy_and_is_zero_for_one_set():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=g)
    b = torch.randn(200, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5
    cov_a, cov_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    expected = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-9
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :5])
