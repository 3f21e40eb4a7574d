"""The tokenizer's optional perceptual and adversarial terms (varlite.train.perceptual, varlite.train.discriminator,
``train-tokenizer --perceptual-weight / --gan-weight``), and lesson 6's exercises on them (6.5, 6.6)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from varlite import cli
from varlite import exercises as ex
from varlite.data import Shapes, images_at, to_pm1
from varlite.safe_io import CheckpointError
from varlite.train import loop
from varlite.train import tokenizer as tokenizer_module
from varlite.train.checkpoint import load_checkpoint
from varlite.train.discriminator import PatchDiscriminator, adaptive_weight, generator_loss, hinge_d_loss
from varlite.train.distributed import Dist
from varlite.train.metric_log import read_metrics
from varlite.train.perceptual import feature_distance, load_perceptual, unit_normalise
from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer

from tests.test_train import MICRO, micro_preset_one_thread  # noqa: F401  (the micro preset, registered on one thread)

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
sys.path.insert(0, str(LESSONS))
try:
    SOLUTIONS = importlib.import_module("solutions.lesson06")
finally:
    sys.path.remove(str(LESSONS))

# 32-px images, a 4x4 latent, scales 1, 2, 4: a tokenizer step takes milliseconds
LOSS_KEYS = ("perceptual_weight", "gan_weight", "disc_start", "disc_lr")


@pytest.fixture(scope="module")
def shapes():
    """A few Shapes images per split (the trainer's own loader would draw all 11,000)."""
    return {"train": Shapes(n=24, split="train"), "test": Shapes(n=8, split="test")}


@pytest.fixture
def small_shapes(shapes, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "load_checked", lambda name, split, *args, **kw: shapes[split])


@pytest.fixture(scope="module")
def perceptual():
    return load_perceptual()


def config(run_dir, **kw):
    base = dict(run_dir=str(run_dir), preset=MICRO.name, dataset="shapes", steps=4, batch_size=4, log_every=1,
                warmup_steps=1, eval_every=0, sample_every=0, ckpt_every=100, eval_images=8, progress=False)
    return TokenizerTrainConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------ the perceptual distance
def test_perceptual_distance_is_zero_for_identical_images_positive_and_symmetric(shapes, perceptual):
    x, y = to_pm1(shapes["test"].images_u8[:4]), to_pm1(shapes["test"].images_u8[4:8])
    with torch.no_grad():
        feats = perceptual.features(x)
        assert [tuple(f.shape[1:]) for f in feats] == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (128, 4, 4)]
        assert torch.equal(perceptual(x, x), torch.zeros(4))
        d_xy, d_yx = perceptual(x, y), perceptual(y, x)
    assert (d_xy > 0).all() and torch.allclose(d_xy, d_yx, rtol=1e-6, atol=0)
    assert (d_xy <= 4 * len(feats)).all()              # each layer's term is a cosine distance in [0, 4]


def test_feature_distance_is_the_lpips_formula_with_unit_weights():
    g = torch.Generator().manual_seed(0)
    fx = [torch.randn(2, 5, 3, 3, generator=g), torch.randn(2, 7, 2, 2, generator=g)]
    fy = [torch.randn(2, 5, 3, 3, generator=g), torch.randn(2, 7, 2, 2, generator=g)]
    by_hand = torch.zeros(2)
    for a, b in zip(fx, fy):
        for i in range(2):
            for h in range(a.shape[2]):
                for w in range(a.shape[3]):
                    u, v = a[i, :, h, w], b[i, :, h, w]
                    by_hand[i] += (u / u.norm() - v / v.norm()).square().sum() / (a.shape[2] * a.shape[3])
    assert torch.allclose(feature_distance(fx, fy), by_hand, rtol=1e-5)
    assert torch.allclose(unit_normalise(fx[0]).norm(dim=1), torch.ones(2, 3, 3))


def test_perceptual_gradient_reaches_the_reconstruction_not_the_frozen_net(shapes, perceptual):
    x = to_pm1(shapes["test"].images_u8[:2])
    recon = (x * 0.8).requires_grad_(True)
    perceptual(recon, x).sum().backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert not perceptual.training
    assert all(not p.requires_grad and p.grad is None for p in perceptual.parameters())


# ------------------------------------------------------------------------------------------ the adversarial term
def test_hinge_and_generator_losses_on_hand_made_logits():
    real, fake = torch.tensor([[2.0, 0.5]]), torch.tensor([[-3.0, 0.0]])
    # real: relu(1 - 2) = 0, relu(1 - 0.5) = 0.5 -> 0.25; fake: relu(1 - 3) = 0, relu(1 + 0) = 1 -> 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert hinge_d_loss(torch.full((2, 3), 1.0), torch.full((2, 3), -1.0)).item() == 0.0     # margins met
    assert generator_loss(fake).item() == pytest.approx(1.5)


def test_adaptive_weight_is_the_ratio_of_the_gradient_norms_at_the_last_layer():
    """A linear "last layer" out = x W^T: d rec / dW and d L_G / dW written out by hand."""
    g = torch.Generator().manual_seed(0)
    x, target, v = torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    last = nn.Linear(3, 2, bias=False)
    out = last(x)
    rec = (out - target).square().mean()
    g_loss = -(out * v).mean()
    grad_rec = 2 * (out - target).T.detach() @ x / out.numel()          # d mean((xW^T - t)^2) / dW
    grad_g = -v.T @ x / out.numel()                                      # d -mean(v * xW^T) / dW
    expected = grad_rec.norm() / (grad_g.norm() + 1e-4)
    weight = adaptive_weight(rec, g_loss, last.weight)
    assert torch.allclose(weight, expected, rtol=1e-5) and not weight.requires_grad
    (rec + weight * g_loss).backward()                                   # the graph was kept for the total loss
    assert last.weight.grad is not None
    assert adaptive_weight(rec.detach() * 0 + last(x).sum(), last(x).sum() * 0, last.weight).item() == 1e4   # clamp


def test_patch_discriminator_gives_a_grid_of_logits():
    assert PatchDiscriminator()(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 6, 6)


# ------------------------------------------------------------------------------------------ the trainer
def test_options_off_leave_the_loss_exactly_as_before(small_shapes, tmp_path):
    trainer = TokenizerTrainer(config(tmp_path))
    assert trainer.perceptual is None and trainer.discriminator is None
    assert not set(LOSS_KEYS) & set(trainer.checkpoint_configs()["train"])      # old checkpoints resume
    idx_b = torch.tensor([0, 5, 9, 12])
    torch.manual_seed(0)
    loss, logs = trainer.compute_loss(idx_b, step=0)
    img = images_at(trainer.train_set, idx_b, "cpu")
    recon, vq_loss, _ = trainer.model(img)
    assert torch.equal(loss, F.mse_loss(recon, img) + vq_loss)
    assert set(logs) == {"loss", "rec", "vq", "psnr"}


def test_both_terms_on_run_log_and_resume_to_identical_weights(small_shapes, tmp_path):
    """train-tokenizer with both terms (the GAN term from step 2): the metrics carry perc, gan_g, gan_d and lambda
    from then on; a run stopped after step 3 and resumed ends bit-identical to an uninterrupted one -- tokenizer,
    discriminator and both optimizers."""
    def run(run_dir, *extra):
        return cli.main(["train-tokenizer", "--run-dir", str(run_dir), "--preset", MICRO.name, "--steps", "5",
                         "--batch-size", "4", "--warmup-steps", "1", "--log-every", "1", "--eval-every", "0",
                         "--sample-every", "0", "--eval-images", "8", "--no-progress", "--perceptual-weight", "0.5",
                         "--gan-weight", "0.5", "--disc-start", "2", "--disc-lr", "1e-3", *extra])
    assert run(tmp_path / "straight") == 0
    assert run(tmp_path / "resumed", "--stop-at", "3") == 0
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 3
    assert run(tmp_path / "resumed") == 0
    rows = read_metrics(tmp_path / "straight", "train")
    assert rows == read_metrics(tmp_path / "resumed", "train") and len(rows) == 5
    assert all("perc" in r and ("gan_g" in r) == (r["step"] > 2) for r in rows)
    assert all(r["lambda"] > 0 and "gan_d" in r for r in rows[2:])
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("straight", "resumed"))
    assert a["configs"]["train"]["gan_weight"] == 0.5 and a["configs"]["train"]["disc_start"] == 2
    for key in ("model", "optimizer"):
        assert _equal(a[key], b[key]), key
    for key in ("discriminator", "disc_optimizer"):
        assert _equal(a["extra"][key], b["extra"][key]), key


def _equal(a, b) -> bool:
    """Nested state dicts equal, tensors bit for bit."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_resuming_with_other_loss_options_is_a_clear_error(small_shapes, tmp_path):
    TokenizerTrainer(config(tmp_path / "gan", gan_weight=0.5, stop_at=1)).run()
    with pytest.raises(CheckpointError, match=r"trained with --gan-weight 0.5 --disc-start 0 --disc-lr 0.0002, but "
                                              r"this run asks for neither the perceptual nor the GAN term"):
        TokenizerTrainer(config(tmp_path / "gan")).run()
    TokenizerTrainer(config(tmp_path / "plain", stop_at=1)).run()
    with pytest.raises(CheckpointError, match=r"trained with neither .* asks for --perceptual-weight 0.5\. The loss"):
        TokenizerTrainer(config(tmp_path / "plain", perceptual_weight=0.5)).run()


def test_a_resume_reads_the_checkpoint_once(small_shapes, tmp_path, monkeypatch):
    """The loss options are compared inside the one read that resuming does, not by a read of their own."""
    TokenizerTrainer(config(tmp_path / "run", stop_at=1)).run()
    reads = []
    for module in (loop, tokenizer_module):
        monkeypatch.setattr(module, "load_checkpoint", lambda *args: reads.append(args) or load_checkpoint(*args))
    assert TokenizerTrainer(config(tmp_path / "run", stop_at=2)).run().step == 2
    assert len(reads) == 1


def test_invalid_loss_options_and_torchrun_gan_are_refused(tmp_path):
    for kw, message in [(dict(perceptual_weight=-1.0), "--perceptual-weight must be a finite number >= 0"),
                        (dict(gan_weight=float("nan")), "--gan-weight must be a finite number >= 0"),
                        (dict(disc_lr=0.0), "--disc-lr must be a finite number > 0"),
                        (dict(disc_start=-1), "--disc-start must be an integer >= 0")]:
        with pytest.raises(ValueError, match=message):
            config(tmp_path, **kw)
    with pytest.raises(ValueError, match="--gan-weight is not supported in a data-parallel"):
        TokenizerTrainer(config(tmp_path, gan_weight=0.1), Dist(rank=0, world=2, device=torch.device("cpu")))


# ------------------------------------------------------------------------------------------ lesson 6: 6.5 and 6.6
def check(name, fn):
    return getattr(ex, f"check_{name}")(fn, verbose=False)


def assert_wrong(result, phrase):
    assert result.status == "wrong" and phrase in result.message, result.message


@pytest.mark.parametrize("name", ["perceptual_distance", "adaptive_weight"])
def test_new_exercises_solution_passes_stub_is_not_attempted(name):
    assert check(name, getattr(SOLUTIONS, name)).passed

    def stub(*args):
        raise NotImplementedError
    assert check(name, stub).status == "not attempted"


def test_perceptual_distance_mistakes():
    def distance(fx, fy, normalise=True, dim=1, reduce_space="mean", squared=True):
        total = 0
        for a, b in zip(fx, fy):
            if normalise:
                a, b = a / (a.norm(dim=dim, keepdim=True) + 1e-10), b / (b.norm(dim=dim, keepdim=True) + 1e-10)
            per_position = (a - b).square().sum(1)
            per_image = per_position.mean((1, 2)) if reduce_space == "mean" else per_position.sum((1, 2))
            total = total + (per_image if squared else per_image.sqrt())
        return total
    assert check("perceptual_distance", distance).passed
    assert_wrong(check("perceptual_distance", lambda fx, fy: distance(fx, fy, normalise=False)), "no unit")
    assert_wrong(check("perceptual_distance", lambda fx, fy: distance(fx, fy, dim=2)), "along a spatial axis")
    assert_wrong(check("perceptual_distance", lambda fx, fy: distance(fx, fy, reduce_space="sum")), "summed over")
    assert_wrong(check("perceptual_distance", lambda fx, fy: distance(fx, fy, squared=False)), "square root")
    from varlite.train.perceptual import feature_distance as library
    assert check("perceptual_distance", lambda fx, fy: library(fx, fy)).status == "refused"


def test_adaptive_weight_mistakes():
    def weight(rec, g, w, inverted=False, detach=True, clamp=True, values=False):
        if values:
            ratio = rec / (g.abs() + 1e-4)
        else:
            gr = torch.autograd.grad(rec, w, retain_graph=True, create_graph=not detach)[0].norm()
            gg = torch.autograd.grad(g, w, retain_graph=True, create_graph=not detach)[0].norm()
            ratio = gg / (gr + 1e-4) if inverted else gr / (gg + 1e-4)
        ratio = ratio.clamp(0, 1e4) if clamp else ratio
        return ratio.detach() if detach else ratio
    assert check("adaptive_weight", weight).passed
    assert_wrong(check("adaptive_weight", lambda r, g, w: weight(r, g, w, inverted=True)), "upside down")
    assert_wrong(check("adaptive_weight", lambda r, g, w: weight(r, g, w, detach=False)), "carries a gradient")
    assert_wrong(check("adaptive_weight", lambda r, g, w: weight(r, g, w, clamp=False)), "no clamp")
    assert_wrong(check("adaptive_weight", lambda r, g, w: weight(r, g, w, values=True)), "the losses' values")

    def graph_freed(rec, g, w):
        gr = torch.autograd.grad(rec, w)[0].norm()
        gg = torch.autograd.grad(g, w)[0].norm()
        return (gr / (gg + 1e-4)).clamp(0, 1e4).detach()
    assert_wrong(check("adaptive_weight", graph_freed), "retain_graph=True")
    assert check("adaptive_weight", lambda r, g, w: adaptive_weight(r, g, w)).status == "refused"
