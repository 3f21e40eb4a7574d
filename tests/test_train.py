"""Training stack: tiny runs of every path, exact resume, checkpoint / dataset / input errors, data parallel."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varlite.core.configs import PRESETS, Preset, VARConfig, VQVAEConfig
from varlite.data import CorruptDatasetError, DatasetNotFoundError
from varlite import cli
from varlite.train import cli as train_cli
from varlite.safe_io import CheckpointError
from varlite.train.checkpoint import load_checkpoint, save_checkpoint
from varlite.train.classifier import ClassifierTrainConfig, ClassifierTrainer, load_classifier
from varlite.train.loop import DataOrder, lr_at
from varlite.train.metric_log import MetricLog, read_metrics
from varlite.train.progress import Progress
from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer, evaluate_tokenizer, load_tokenizer
from varlite.train.transformer import TokenCache, VarTrainConfig, VarTrainer, evaluate_var, load_var_run
from varlite.core.vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]
# a preset small enough for many runs per test: 32-px images, 4x4 latent, scales 1, 2, 4 (L = 21 tokens)
MICRO = Preset("test-micro",
               VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, using_sa=False,
                           using_mid_sa=False, patch_nums=(1, 2, 4)),
               VARConfig(vocab_size=64, z_channels=8, patch_nums=(1, 2, 4), num_classes=10, depth=1, embed_dim=64,
                         num_heads=2))


@pytest.fixture(autouse=True, scope="module")
def micro_preset_one_thread():
    """Register the micro preset; run on one thread (tiny tensors gain nothing from more, and lose on a busy CPU)."""
    PRESETS[MICRO.name] = MICRO
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    del PRESETS[MICRO.name]


def make_folder(root: Path, classes: int = 10, train_per_class: int = 4, test_per_class: int = 2, size: int = 32):
    """A tiny image-folder dataset (root/train/<class>/*.png, root/test/<class>/*.png) of noisy coloured squares."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[4 + c:16 + c, 8:20] = (25 * c, 255 - 20 * c, 128)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


def tok_config(run_dir, folder, **kw):
    base = dict(run_dir=str(run_dir), preset="test-micro", dataset="folder", data_root=str(folder), steps=4,
                batch_size=8, log_every=1, eval_every=2, sample_every=4, ckpt_every=2, eval_images=20,
                restart_every=1, dead_after=2, progress=False, warmup_steps=2)
    return TokenizerTrainConfig(**{**base, **kw})


def var_config(run_dir, folder, tokenizer, **kw):
    base = dict(run_dir=str(run_dir), preset="test-micro", tokenizer=str(tokenizer), dataset="folder",
                data_root=str(folder), steps=4, batch_size=8, log_every=1, eval_every=2, sample_every=4,
                ckpt_every=2, eval_images=20, samples_per_class=1, progress=False, warmup_steps=2)
    return VarTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tokenizer_run(folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("tok")
    result = TokenizerTrainer(tok_config(run, folder)).run()
    assert result.finished
    return run


@pytest.fixture(scope="module")
def var_run(folder, tokenizer_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("var")
    assert VarTrainer(var_config(run, folder, tokenizer_run)).run().finished
    return run


# ------------------------------------------------------------------------------------------------ tiny runs
def test_tokenizer_run_writes_checkpoint_metrics_and_samples(tokenizer_run):
    assert sorted(p.name for p in tokenizer_run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl",
                                                              "samples_000004.png"]
    train = read_metrics(tokenizer_run, "train")
    assert [int(r["step"]) for r in train] == [1, 2, 3, 4]
    assert {"loss", "rec", "vq", "psnr", "lr", "grad_norm"} <= set(train[0])
    val = read_metrics(tokenizer_run, "val")
    assert [int(r["step"]) for r in val] == [2, 4]
    assert {"psnr", "ssim", "usage_s1", "perplexity_s3"} <= set(val[0])
    ckpt = load_checkpoint(tokenizer_run / "checkpoint.pt", "tokenizer")
    assert ckpt["step"] == 4 and ckpt["extra"]["codes_restarted"] >= 64      # step 0 initialises every code
    vqvae, _ = load_tokenizer(tokenizer_run)
    assert not vqvae.training
    assert vqvae.quantize.ema_vocab_hit_SV.sum() > 0                          # usage statistic was updated


def test_codebook_starts_from_data_and_dead_codes_are_restarted(folder, tmp_path):
    def changed_rows(restart_every, run):
        trainer = TokenizerTrainer(tok_config(run, folder, steps=1, eval_every=0, sample_every=0,
                                           restart_every=restart_every))
        before = trainer.model.quantize.embedding.weight.detach().clone()
        trainer.run()
        after = trainer.model.quantize.embedding.weight.detach()
        return (after != before).any(dim=1)

    assert changed_rows(1, tmp_path / "restart").all()          # at step 0 every code is set from the residuals
    assert not changed_rows(0, tmp_path / "plain").all()        # without restarts unused codes keep their init


def test_optional_edge_loss_and_l1(folder, tmp_path):
    TokenizerTrainer(tok_config(tmp_path, folder, steps=2, recon_loss="l1", edge_loss_weight=0.1,
                             eval_every=0, sample_every=0)).run()
    row = read_metrics(tmp_path, "train")[-1]
    assert row["edge"] > 0
    with pytest.raises(ValueError, match="recon_loss must be"):
        tok_config(tmp_path, folder, recon_loss="ssim")


def test_var_run_caches_tokens_and_logs_every_scale(var_run):
    cache = torch.load(var_run / "tokens_train.pt", weights_only=True)
    assert cache["idx_NL"].shape == (40, 21) and cache["idx_NL"].dtype == torch.int16
    assert int((cache["idx_NL"][:, 0] >= 0).sum()) == 32          # 4 steps of 8 images: each encoded once
    train = read_metrics(var_run, "train")
    assert {"loss", "loss_last", "acc", "acc_last", "loss_s1", "acc_s3"} <= set(train[0])
    val = read_metrics(var_run, "val")
    assert {"val_loss", "val_acc_last", "val_loss_s3"} <= set(val[0])
    assert (var_run / "samples_000004.png").is_file()
    var, configs = load_var_run(var_run)
    img = var.generate([0, 9], seed=1)
    assert img.shape == (2, 3, 32, 32) and 0 <= img.min() and img.max() <= 1


def test_token_cache_encodes_once_and_starts_afresh_for_another_tokenizer(folder, tokenizer_run, tmp_path):
    from varlite.data import load_dataset
    dataset = load_dataset("folder", "train", str(folder))
    vqvae_a, _ = load_tokenizer(tokenizer_run)
    cache = TokenCache(vqvae_a, dataset, tmp_path / "tokens.pt")
    idx = cache.get(torch.tensor([3, 1, 3]))
    assert cache.num_encoded == 2 and torch.equal(idx[0], idx[2])
    assert torch.equal(idx[1], torch.cat(vqvae_a.img_to_idx(dataset[1][0][None]), dim=1)[0])
    cache.save()
    assert TokenCache(vqvae_a, dataset, tmp_path / "tokens.pt").num_encoded == 2
    vqvae_b = VQVAE(vqvae_a.config)                           # different weights: the saved tokens do not apply
    assert TokenCache(vqvae_b, dataset, tmp_path / "tokens.pt").num_encoded == 0


def test_classifier_run_and_class_consistency_via_evaluate(folder, var_run, tmp_path, capsys):
    cls_run = tmp_path / "cls"
    config = ClassifierTrainConfig(run_dir=str(cls_run), dataset="folder", data_root=str(folder), steps=3, width=8,
                                   batch_size=8, progress=False, eval_every=0, sample_every=0, warmup_steps=1)
    assert ClassifierTrainer(config).run().finished
    assert "test_acc" in read_metrics(cls_run, "val")[0]
    load_classifier(cls_run)
    out = tmp_path / "m.json"
    cli.main(["evaluate", "--var", str(var_run), "--dataset", "folder", "--data-root", str(folder),
              "--classifier", str(cls_run), "--per-class", "1", "--out", str(out), "--device", "cpu"])
    metrics = json.loads(out.read_text())
    assert {"psnr", "ssim", "usage_s1", "perplexity_s3"} <= set(metrics["tokenizer"])
    assert {"val_loss", "val_acc", "val_acc_s1", "val_loss_last"} <= set(metrics["var"])
    assert 0 <= metrics["class_consistency"]["class_consistency"] <= 1
    assert metrics["class_consistency"]["samples"] == 10
    assert 0 <= metrics["classifier_test_acc"] <= 1


def test_cli_registers_commands_and_trains(folder, tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    train_cli.add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-tokenizer", "--run-dir", str(tmp_path), "--batch-size", "8", "--no-hflip"])
    assert args.batch_size == 8 and args.hflip is False and args.preset == "shapes"
    rc = cli.main(["train-tokenizer", "--run-dir", str(tmp_path), "--preset", "test-micro", "--dataset", "folder",
                   "--data-root", str(folder),
                   "--steps", "1", "--batch-size", "8", "--no-progress", "--eval-every", "0", "--sample-every", "0"])
    assert rc == 0 and (tmp_path / "checkpoint.pt").is_file()


# ------------------------------------------------------------------------------------------------ exact resume
class InterruptAt:
    """Send this process SIGINT right after optimizer step ``step`` (as a user pressing Ctrl-C would)."""

    def __init__(self, trainer, step):
        original = trainer.after_step

        def after_step(s):
            original(s)
            if s == step:
                os.kill(os.getpid(), signal.SIGINT)
        trainer.after_step = after_step


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["tokenizer", "var"])
def test_resume_after_interrupt_equals_uninterrupted(kind, folder, tokenizer_run, tmp_path):
    def trainer(run):
        if kind == "tokenizer":
            return TokenizerTrainer(tok_config(run, folder, steps=6, hflip=True, eval_every=0, sample_every=0,
                                            ckpt_every=100))
        return VarTrainer(var_config(run, folder, tokenizer_run, steps=6, eval_every=0, sample_every=0, ckpt_every=100))

    straight = trainer(tmp_path / "straight")
    assert straight.run().finished
    first = trainer(tmp_path / "resumed")
    InterruptAt(first, 2)
    result = first.run()
    assert not result.finished and result.interrupted and result.step == 3
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 3
    second = trainer(tmp_path / "resumed")
    assert second.run().finished
    rows_a = read_metrics(tmp_path / "straight", "train")
    rows_b = read_metrics(tmp_path / "resumed", "train")
    assert rows_a == rows_b and len(rows_a) == 6
    assert weights_equal(straight.model.state_dict(), second.model.state_dict())
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert weights_equal(a["model"], b["model"])
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


def test_interrupt_returns_what_was_trained_with_its_metrics(folder, tokenizer_run, tmp_path):
    """Ctrl-C before any evaluation was due (in a notebook: Kernel -> Interrupt, the same SIGINT) stops cleanly: the
    result says interrupted, the checkpoint holds the weights after the steps done, and the result carries the
    held-out metrics of exactly those weights (not logged: a resumed run must log what an uninterrupted one does)."""
    tok = TokenizerTrainer(tok_config(tmp_path / "tok", folder, steps=6, eval_every=0, sample_every=0, ckpt_every=100))
    InterruptAt(tok, 2)
    result = tok.run()
    assert (result.step, result.finished, result.interrupted) == (3, False, True)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler          # Ctrl-C works as before again
    saved, _ = load_tokenizer(tmp_path / "tok")
    assert result.metrics == evaluate_tokenizer(saved, tok.val_set, 20)
    assert read_metrics(tmp_path / "tok", "val") == []

    var = VarTrainer(var_config(tmp_path / "var", folder, tokenizer_run, steps=6, eval_every=0, sample_every=0,
                                ckpt_every=100))
    InterruptAt(var, 2)
    result = var.run()
    assert (result.step, result.interrupted) == (3, True)
    saved, _ = load_var_run(tmp_path / "var")
    assert result.metrics["val_loss"] == evaluate_var(saved, var.val_tokens.idx_NL[:20], var.val_tokens.labels_N[:20],
                                                      0)["val_loss"]


def test_ctrl_c_during_the_last_step_just_finishes(folder, tmp_path):
    trainer = TokenizerTrainer(tok_config(tmp_path, folder, steps=4, eval_every=0, sample_every=0))
    InterruptAt(trainer, 3)
    result = trainer.run()
    assert (result.step, result.finished, result.interrupted) == (4, True, False) and "psnr" in result.metrics


def test_stop_at_then_continue_equals_one_run(folder, tmp_path):
    TokenizerTrainer(tok_config(tmp_path / "a", folder, steps=4, eval_every=0, sample_every=0)).run()
    first = TokenizerTrainer(tok_config(tmp_path / "b", folder, steps=4, stop_at=2, eval_every=0, sample_every=0)).run()
    assert (first.finished, first.interrupted, first.step) == (False, False, 2)
    TokenizerTrainer(tok_config(tmp_path / "b", folder, steps=4, eval_every=0, sample_every=0)).run()
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in "ab")
    assert weights_equal(a["model"], b["model"]) and b["step"] == 4


# ------------------------------------------------------------------------------------------------ errors
def test_corrupted_checkpoint_is_a_clear_error(folder, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        TokenizerTrainer(tok_config(tmp_path, folder)).run()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"some": "dict"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a varlite training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_truncated_checkpoint_is_a_clear_error(tokenizer_run, tmp_path):
    data = (tokenizer_run / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_mismatched_checkpoint_names_the_difference(folder, tokenizer_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((tokenizer_run / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0.001 vs now 0.005"):
        TokenizerTrainer(tok_config(run, folder, lr=5e-3)).run()
    with pytest.raises(CheckpointError, match="'tokenizer' checkpoint, but a 'var' checkpoint"):
        VarTrainer(var_config(run, folder, tokenizer_run)).run()
    with pytest.raises(CheckpointError, match="'tokenizer' checkpoint, but a 'classifier'"):
        load_classifier(run)


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"kind": "tokenizer", "step": 1, "configs": {}, "model": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 1


def test_missing_and_corrupt_dataset_are_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="CIFAR-10 not found"):
        TokenizerTrainer(TokenizerTrainConfig(run_dir=str(tmp_path / "r"), preset="shapes", dataset="cifar10",
                                              data_root=str(tmp_path / "nowhere")))
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(CorruptDatasetError):
        TokenizerTrainer(TokenizerTrainConfig(run_dir=str(tmp_path / "r"), preset="shapes", dataset="cifar10",
                                              data_root=str(bad)))


def test_wrong_image_size_for_the_preset(folder, tmp_path):
    with pytest.raises(ValueError, match=r"takes 64x64"):
        TokenizerTrainer(tok_config(tmp_path, folder, preset="tiny"))


def test_labels_out_of_range_for_the_model(tokenizer_run, tmp_path):
    eleven = make_folder(tmp_path / "eleven", classes=11, train_per_class=1, test_per_class=1)
    with pytest.raises(ValueError, match=r"label 10, outside 0..9"):
        VarTrainer(var_config(tmp_path / "run", eleven, tokenizer_run))


def test_var_needs_a_tokenizer_of_its_preset(folder, tmp_path):
    with pytest.raises(ValueError, match="needs --tokenizer"):
        VarTrainer(var_config(tmp_path, folder, ""))
    with pytest.raises(CheckpointError, match="does not exist"):
        VarTrainer(var_config(tmp_path, folder, tmp_path / "missing"))


def test_batch_larger_than_the_dataset(folder, tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        TokenizerTrainer(tok_config(tmp_path, folder, batch_size=64)).run()


# ------------------------------------------------------------------------------------------------ plumbing
def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(0.1)


def test_data_order_covers_each_epoch_once_and_splits_between_processes():
    order = DataOrder(10, 4, seed=3)
    epoch0 = torch.cat([order.indices(0), order.indices(1)])
    assert len(set(epoch0.tolist())) == 8
    assert not torch.equal(order.indices(0), order.indices(2))           # a new permutation per epoch
    ranks = [DataOrder(10, 4, seed=3, rank=r, world=2).indices(1) for r in range(2)]
    assert sorted(torch.cat(ranks).tolist()) == sorted(order.indices(1).tolist())
    with pytest.raises(ValueError, match="divisible"):
        DataOrder(10, 3, seed=0, world=2)


def test_metric_log_drops_rows_after_the_resumed_step(tmp_path):
    log = MetricLog(tmp_path, None)
    for s in (1, 2, 3):
        log.write("train", s, {"loss": 1.0 / s})
    MetricLog(tmp_path, resume_step=2)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_progress_line_shows_rate_and_eta():
    p = Progress("train", total=100, start=0)
    p.t0 -= 10
    line = p.line(50, "loss=1")
    assert "50/100" in line and "5.00 it/s" in line and "<00:10" in line and "loss=1" in line


# ------------------------------------------------------------------------------------------------ data parallel
def test_torchrun_two_processes_agree(folder, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "torchrun_entry.py"), "train-tokenizer", "--run-dir", str(run), "--dataset", "folder",
           "--data-root", str(folder), "--steps", "3", "--batch-size", "8", "--log-every", "1", "--eval-every", "0",
           "--sample-every", "0", "--no-progress", "--threads", "1", "--restart-every", "1", "--dead-after", "1",
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 processes hold identical weights" in proc.stderr
    exits = [line for line in proc.stderr.splitlines() if line.startswith("threads at exit:")]
    assert len(exits) == 2 and all(line.split(":")[1].strip() for line in exits), exits   # the threads were listed
    assert not any("gloo" in line for line in exits), exits          # and gloo's are gone: the group was freed
    ckpt = load_checkpoint(run / "checkpoint.pt", "tokenizer")
    assert ckpt["world"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 3
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])   # each process its own stream


# ------------------------------------------------------------------------------------------------ metrics
def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity
    from varlite.train.metrics import ssim
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    ours = ssim(x, y)
    for i in range(2):
        ref = structural_similarity(x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy(), channel_axis=2,
                                    data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert ssim(x, x).allclose(torch.ones(2))


def test_psnr_of_a_known_error():
    from varlite.train.metrics import psnr
    x = torch.zeros(1, 3, 8, 8)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-4)        # MSE 0.01 -> 20 dB


def test_codebook_usage_and_perplexity():
    from varlite.train.metrics import codebook_stats
    uniform, single = codebook_stats([torch.arange(8).repeat(3), torch.zeros(5, dtype=torch.long)], vocab_size=16)
    assert uniform == {"usage": 0.5, "perplexity": pytest.approx(8.0)}
    assert single == {"usage": 1 / 16, "perplexity": pytest.approx(1.0)}


def test_per_scale_loss_and_accuracy():
    from varlite.train.metrics import per_scale_loss_acc, scale_logs
    begin_ends = [(0, 1), (1, 5)]
    target = torch.tensor([[2, 0, 1, 1, 3]])
    logits = torch.full((1, 5, 4), -1e4)
    logits[0, torch.arange(5), torch.tensor([2, 0, 1, 0, 0])] = 0.0         # scale 1 right, scale 2: 2 of 4 right
    loss_BL, loss_K, acc_K = per_scale_loss_acc(logits, target, begin_ends)
    assert acc_K.tolist() == [1.0, 0.5] and loss_K[0] == pytest.approx(0.0)
    logs = scale_logs("val_", loss_BL, loss_K, acc_K, begin_ends)
    assert logs["val_acc"] == pytest.approx(3 / 5) and logs["val_acc_last"] == 0.5 and logs["val_acc_s1"] == 1.0
