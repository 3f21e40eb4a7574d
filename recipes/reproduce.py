"""Three claims of the VAR paper, reproduced small on Shapes (32x32, 10 classes), on a CPU: the runs behind lesson 12.

Usage: python recipes/reproduce.py [--steps 250] [--runs runs/reproduce] [--out lessons/data/reproduce] [--threads 1]
(or ``make reproduce``); ``--quick`` runs every stage for a few steps into runs/reproduce-quick/ (a smoke test). Each stage writes ``<out>/<stage>.json`` when it is done and is skipped when that file
exists; a training stage stopped half-way resumes from its checkpoint in ``<runs>/<stage>/``. Delete a JSON file
(and its run dir) to redo that stage.

Stages, in the order they run (the most informative first, so an early stop still leaves results):
  judge            the SmallCNN classifier that judges class-consistency (300 steps x 64, as the built-in card)
  tok-single       a single-scale tokenizer (patch_nums = (8,): 64 tokens in raster order), the AR baseline's
  var-d4           VAR depth 4, width 128 (the ``shapes`` preset's transformer) on the built-in residual tokenizer
  ar               RasterAR depth 4, width 128 on tok-single, trained for as many CPU-seconds as var-d4 (its step
                   count comes from timing both models' steps side by side at the start of the stage)
  var-d1 ... d3     the depth series for the loss-vs-parameters fit (width 128, 4 heads; var-d4 is its 4th point)
  var-builtin      the built-in shapes VAR (var-d4's recipe, 700 steps: about the AR model's step count), evaluated
  tok-independent  a tokenizer with independent per-scale tokens (varlite.baselines.IndependentScaleQuantizer)
  var-independent  VAR depth 4, width 128 on tok-independent
  tok-residual-rerun  the residual tokenizer again, by this recipe's trainer and seed (the built-in one ran on an
                   earlier revision of the dead-code check): the like-for-like reconstruction baseline of claim 2
  var-d5           the 5th point of the depth series
  summary          everything above in ``summary.json`` (the file lesson 12 reads), with the fits

The tokenizers use the recipe of the built-in ``shapes`` tokenizer (350 steps x 32, lr 1e-3, 50 warm-up steps,
dead-code restarts), which itself is the residual tokenizer of the comparisons (``varlite/weights/shapes.pth``, so
it costs nothing here). Every transformer trains ``--steps`` steps x 32 token maps (AR: its equal-CPU count) with
lr 1e-3, 50 warm-up steps, cosine to 10 %, AdamW (0.9, 0.95) weight decay 0.05, label smoothing 0.1, class dropout
0.1. Evaluation: validation loss on the 1000 held-out images' tokens (no smoothing, no label dropout); 200 samples
(20 per class, cfg 1.5, top-k 20, seed 0) judged by the classifier (class-consistency) and the Frechet distance of
its features to the held-out images'. CPU time (user + system of this process, all threads) and wall time are
logged per stage with the load average, since the machine may be shared.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from varlite.baselines import (RasterAR, ar_loss, count_parameters, fit_power_law, independent_vqvae,
                               sample_by_refeeding, save_raster_ar, timed, var_loss)
from varlite.builtin import load_builtin
from varlite.core.configs import get_preset
from varlite.train.classifier import ClassifierTrainConfig, ClassifierTrainer, accuracy, consistency_of, load_classifier
from varlite.train.evaluate import frechet_report
from varlite.train.loop import LoopConfig, Trainer, config_dict, load_checked
from varlite.train.metric_log import read_metrics
from varlite.train.metrics import psnr
from varlite.data import images_at
from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer, evaluate_tokenizer
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]
SHAPES = get_preset("shapes")
DEPTHS = (1, 2, 3, 4, 5)            # the depth series (var-d1..d3 run before claim 2, var-d5 last) (width 128, 4 heads): var-d4 is also the VAR of claims 1-2
SAMPLING = {"cfg": 1.5, "top_k": 20}


@dataclass(frozen=True)
class Budget:
    """The sizes of the runs: ``FULL`` is the reproduction; ``QUICK`` (``--quick``) only checks that every stage runs."""
    judge_steps: int = 300
    tokenizer_steps: int = 350
    train_images: int = 0                # images encoded for the transformers (0 = all 10,000)
    per_class: int = 20                  # samples per class for class-consistency and the Frechet distance


FULL, QUICK = Budget(), Budget(judge_steps=3, tokenizer_steps=3, train_images=256, per_class=2)


def load_info() -> dict:
    """The machine's load average now (the runs share the machine; wall time depends on it, CPU time less)."""
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)], "cpus": os.cpu_count(),
            "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


class CpuClock:
    """CPU seconds (this process, all threads) a trainer has used over every resumed segment, kept in its
    checkpoint; mixed into the trainers below."""
    cpu_seconds_before = 0.0

    def cpu_seconds(self) -> float:
        return self.cpu_seconds_before + time.process_time() - self.cpu_at_start

    def start_clock(self) -> None:
        self.cpu_at_start = time.process_time()


# ------------------------------------------------------------------------------------------------ tokenizers
@dataclass
class ReproTokenizerConfig(TokenizerTrainConfig):
    patch_nums: tuple = SHAPES.vqvae.patch_nums
    quantizer: str = "residual"          # residual | independent


class ReproTokenizerTrainer(CpuClock, TokenizerTrainer):
    """The built-in shapes tokenizer's trainer, with the scales and the quantizer as settings."""
    kind = "reproduce-tokenizer"

    def __init__(self, config: ReproTokenizerConfig):
        Trainer.__init__(self, config)
        self.start_clock()
        self.vq_config = dataclasses.replace(SHAPES.vqvae, patch_nums=tuple(config.patch_nums))
        self.train_set = load_checked(config.dataset, "train", None, self.vq_config.image_size)
        self.val_set = load_checked(config.dataset, "test", None, self.vq_config.image_size)
        torch.manual_seed(config.seed)
        self.model = independent_vqvae(self.vq_config) if config.quantizer == "independent" else VQVAE(self.vq_config)
        self.train_module = self.model
        self.optimizer = self.make_optimizer(self.model)
        self.num_items = len(self.train_set)
        self.last_hit_V = torch.full((self.vq_config.vocab_size,), -config.dead_after, dtype=torch.long)
        self.codes_restarted = 0

    def checkpoint_configs(self):
        return {"train": config_dict(self.config), "vqvae": self.vq_config.__dict__.copy()}

    def extra_state(self):
        return {**super().extra_state(), "cpu_seconds": self.cpu_seconds()}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.cpu_seconds_before = state["cpu_seconds"]


def tokenizer_recipe(run_dir: Path, patch_nums, quantizer: str, threads: int, steps: int) -> ReproTokenizerConfig:
    return ReproTokenizerConfig(run_dir=str(run_dir), steps=steps, batch_size=32, lr=1e-3, warmup_steps=50,
                                eval_every=0, sample_every=0, ckpt_every=50, eval_images=500, threads=threads,
                                progress=False, patch_nums=tuple(patch_nums), quantizer=quantizer)


def load_repro_tokenizer(run_dir: Path, patch_nums, quantizer: str) -> VQVAE:
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    config = dataclasses.replace(SHAPES.vqvae, patch_nums=tuple(patch_nums))
    vqvae = independent_vqvae(config) if quantizer == "independent" else VQVAE(config)
    vqvae.load_state_dict(ckpt["model"])
    return vqvae.eval()


@torch.no_grad()
def prefix_psnr(vqvae: VQVAE, dataset, n: int = 500) -> list[float]:
    """Mean PSNR (dB) of the image decoded from f_hat after each scale k = 1..K, over the first n held-out images."""
    img = images_at(dataset, torch.arange(n), "cpu")
    images_K = vqvae.idx_to_img(vqvae.img_to_idx(img), every_prefix=True)
    return [round(float(psnr(x.add(1).div(2), img.add(1).div(2)).mean()), 3) for x in images_K]


@torch.no_grad()
def tokenizer_report(vqvae: VQVAE, dataset) -> dict:
    out = evaluate_tokenizer(vqvae, dataset, 1000)
    out["prefix_psnr"] = prefix_psnr(vqvae, dataset)
    out["tokens_per_image"] = sum(pn * pn for pn in vqvae.patch_nums)
    out["parameters"] = count_parameters(vqvae)
    return out


# ------------------------------------------------------------------------------------------------ token maps
@torch.no_grad()
def encode_split(vqvae: VQVAE, dataset, n: int, batch_size: int = 250) -> torch.Tensor:
    """(n, L) int16: the token maps r_1..r_K of the first n images, concatenated."""
    rows = []
    for start in range(0, n, batch_size):
        img = images_at(dataset, torch.arange(start, min(start + batch_size, n)), "cpu")
        rows.append(torch.cat(vqvae.img_to_idx(img), dim=1).to(torch.int16))
    return torch.cat(rows)


def token_maps(vqvae: VQVAE, name: str, runs: Path, train_images: int = 0) -> dict:
    """Train (the first ``train_images``, 0 = all) and test token maps of a tokenizer, encoded once and kept in
    ``<runs>/tokens_<name>.pt``."""
    path = runs / f"tokens_{name}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    size = vqvae.config.image_size
    train, test = load_checked("shapes", "train", None, size, 10), load_checked("shapes", "test", None, size, 10)
    n_train = len(train) if train_images <= 0 else train_images
    maps = {"train": encode_split(vqvae, train, n_train), "train_labels": train.labels[:n_train].clone(),
            "test": encode_split(vqvae, test, len(test)), "test_labels": test.labels.clone()}
    torch.save(maps, path)
    return maps


# ------------------------------------------------------------------------------------------------ transformers
@dataclass
class ReproTransformerConfig(LoopConfig):
    model: str = "var"                   # var | ar
    tokens: str = ""                     # name of the token maps (tokens_<name>.pt in the runs dir)
    depth: int = 4
    width: int = 128
    heads: int = 4
    label_smoothing: float = 0.1
    weight_decay: float = 0.05


class ReproTransformerTrainer(CpuClock, Trainer):
    """Teacher-forced training of a VAR or a RasterAR on precomputed token maps (``varlite.baselines`` losses)."""
    kind = "reproduce-transformer"
    label = "reproduce"

    def __init__(self, config: ReproTransformerConfig, vqvae: VQVAE, maps: dict):
        super().__init__(config)
        self.start_clock()
        self.maps = maps
        torch.manual_seed(config.seed)
        self.model = build_transformer(config, vqvae)
        self.train_module = self.model
        self.optimizer = self.make_optimizer(self.model)
        self.num_items = len(maps["train"])

    def loss(self, labels_B, idx_BL, label_smoothing):
        fn = var_loss if self.config.model == "var" else ar_loss
        return fn(self.model, labels_B, idx_BL, label_smoothing)

    def compute_loss(self, idx_b, step):
        loss = self.loss(self.maps["train_labels"][idx_b], self.maps["train"][idx_b].long(), self.config.label_smoothing)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self):
        return {"val_loss": validation_loss(self.model, self.config.model, self.maps),
                "cpu_seconds": round(self.cpu_seconds(), 1)}

    def extra_state(self):
        return {"cpu_seconds": self.cpu_seconds()}

    def load_extra_state(self, state):
        self.cpu_seconds_before = state["cpu_seconds"]


def build_transformer(config: ReproTransformerConfig, vqvae: VQVAE):
    var_config = dataclasses.replace(SHAPES.var, depth=config.depth, embed_dim=config.width, num_heads=config.heads,
                                     patch_nums=tuple(vqvae.patch_nums))
    model = VAR(var_config, vqvae) if config.model == "var" else RasterAR(var_config, vqvae)
    model.init_weights()
    return model


@torch.no_grad()
def validation_loss(model, kind: str, maps: dict, batch_size: int = 250) -> float:
    """Mean cross-entropy (nats per token) over every token of the held-out token maps, eval mode, no smoothing."""
    was_training = model.training
    model.eval()
    fn = var_loss if kind == "var" else ar_loss
    total, n = 0.0, len(maps["test"])
    for start in range(0, n, batch_size):
        idx_BL = maps["test"][start:start + batch_size].long()
        total += float(fn(model, maps["test_labels"][start:start + batch_size], idx_BL)) * len(idx_BL)
    model.train(was_training)
    return total / n


def transformer_recipe(run_dir: Path, model: str, tokens: str, depth: int, steps: int, threads: int):
    return ReproTransformerConfig(run_dir=str(run_dir), steps=steps, batch_size=32, lr=1e-3, warmup_steps=50,
                                  eval_every=100, sample_every=0, ckpt_every=50, threads=threads, progress=False,
                                  model=model, tokens=tokens, depth=depth, width=128, heads=4)


def learning_curve(run_dir: Path) -> dict:
    """The run's logged rows: training loss (means over 10 steps) and validation loss with the CPU seconds so far."""
    return {"train": [[r["step"], r["loss"]] for r in read_metrics(run_dir, "train")],
            "val": [[r["step"], r["val_loss"], r["cpu_seconds"]] for r in read_metrics(run_dir, "val")]}


def load_trained(run_dir: Path, config: ReproTransformerConfig, vqvae: VQVAE):
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = build_transformer(config, vqvae)
    model.load_state_dict(ckpt["model"])
    return model.eval()


@torch.no_grad()
def sample_report(generate, judge, dataset, per_class: int) -> dict:
    """200 samples (20 per class, seed 0, cfg 1.5, top-k 20) from ``generate(labels) -> images in [0, 1]``: their
    class-consistency under the judge and the Frechet distance of the judge's features to the held-out images'."""
    labels = torch.arange(10).repeat_interleave(per_class)
    images01 = generate(labels)
    out = consistency_of(judge, images01, labels, 10)
    out["frechet"] = frechet_report(judge, images01, dataset)
    return out, images01


def generation_timing(generate, repeats: int = 3) -> dict:
    """Median wall and CPU seconds of generating 1 image and 10 images (one per class)."""
    out = {}
    for batch in (1, 10):
        labels = torch.arange(batch) % 10
        runs = sorted((timed(generate, labels)[1:] for _ in range(repeats)), key=lambda wc: wc[0])
        wall, cpu = runs[len(runs) // 2]
        out[f"batch{batch}"] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}
    return out


# ------------------------------------------------------------------------------------------------ the stages
def finished_or_exit(result) -> None:
    """A training stopped before its last step (Ctrl-C, SIGTERM) saved a checkpoint: stop here, unfinished."""
    if not result.finished:
        raise SystemExit(f"stopped at step {result.step} of {result.run_dir}; run the same command again to resume")


class Reproduction:
    def __init__(self, runs: Path, out: Path, steps: int, threads: int, budget: Budget = FULL):
        self.runs, self.out, self.steps, self.threads, self.budget = runs, out, steps, threads, budget
        runs.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self.test_set = load_checked("shapes", "test", None, 32, 10)

    def done(self, stage: str) -> dict | None:
        path = self.out / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def finish(self, stage: str, result: dict, wall0: float, cpu0: float, load0: dict) -> dict:
        result = {"stage": stage, **result, "stage_wall_s": round(time.time() - wall0, 1),
                  "stage_cpu_s_this_segment": round(time.process_time() - cpu0, 1), "load_at_start": load0,
                  "load_at_end": load_info(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
        (self.out / f"{stage}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"[reproduce] {stage} done: {json.dumps(result)[:400]}", flush=True)
        return result

    def run(self, stage: str, fn) -> dict:
        result = self.done(stage)
        if result is not None:
            print(f"[reproduce] {stage}: already done ({self.out / stage}.json)", flush=True)
            return result
        print(f"[reproduce] {stage}: start {load_info()}", flush=True)
        wall0, cpu0, load0 = time.time(), time.process_time(), load_info()
        return self.finish(stage, fn(), wall0, cpu0, load0)

    # -- judge
    def judge(self) -> dict:
        config = ClassifierTrainConfig(run_dir=str(self.runs / "judge"), dataset="shapes", steps=self.budget.judge_steps,
                                    batch_size=64,
                                    warmup_steps=30, eval_every=0, ckpt_every=100, threads=self.threads,
                                    progress=False)
        cpu0 = time.process_time()
        finished_or_exit(ClassifierTrainer(config).run())
        judge, _ = load_classifier(self.runs / "judge")
        return {"test_accuracy": accuracy(judge, self.test_set), "train_cpu_s": round(time.process_time() - cpu0, 1)}

    def load_judge(self):
        return load_classifier(self.runs / "judge")[0]

    # -- tokenizers
    def tokenizer(self, name: str, patch_nums, quantizer: str) -> dict:
        trainer = ReproTokenizerTrainer(tokenizer_recipe(self.runs / name, patch_nums, quantizer, self.threads,
                                                          self.budget.tokenizer_steps))
        finished_or_exit(trainer.run())
        vqvae = load_repro_tokenizer(self.runs / name, patch_nums, quantizer)
        return {"quantizer": quantizer, "patch_nums": list(patch_nums), "train_cpu_s": round(trainer.cpu_seconds(), 1),
                **tokenizer_report(vqvae, self.test_set)}

    def residual_tokenizer(self) -> dict:
        vqvae, _ = load_builtin("shapes")
        return {"quantizer": "residual", "patch_nums": list(vqvae.patch_nums), "train_cpu_s": 327.0,
                "note": "the built-in shapes tokenizer (varlite/weights/shapes.pth; CPU time from its model card)",
                **tokenizer_report(vqvae, self.test_set)}

    def vqvae_of(self, tokens: str) -> VQVAE:
        if tokens == "residual":
            return load_builtin("shapes")[0]
        if tokens == "single":
            return load_repro_tokenizer(self.runs / "tok-single", (8,), "residual")
        return load_repro_tokenizer(self.runs / "tok-independent", SHAPES.vqvae.patch_nums, "independent")

    # -- transformers
    def transformer(self, stage: str, model: str, tokens: str, depth: int, steps: int, extra: dict | None = None) -> dict:
        vqvae = self.vqvae_of(tokens)
        maps = token_maps(vqvae, tokens, self.runs, self.budget.train_images)
        config = transformer_recipe(self.runs / stage, model, tokens, depth, steps, self.threads)
        trainer = ReproTransformerTrainer(config, vqvae, maps)
        finished_or_exit(trainer.run())
        net = load_trained(self.runs / stage, config, vqvae)
        result = {"steps": steps, "train_cpu_s": round(trainer.cpu_seconds(), 1),
                  "curve": learning_curve(self.runs / stage), **(extra or {})}
        if model == "ar":           # ships with its tokenizer (float16, ~4.5 MB), for lesson 12's live timing
            save_raster_ar(self.out / "ar.pt", net)
        return {**self.evaluate_transformer(stage, net, model, tokens, maps), **result}

    def builtin_var(self) -> dict:
        """The built-in shapes VAR, evaluated like the others: the var-d4 recipe (same tokenizer, size, optimiser,
        schedule shape) trained for 700 steps instead of 250, i.e. about as many steps as the AR model had."""
        vqvae, net = load_builtin("shapes")
        maps = token_maps(vqvae, "residual", self.runs, self.budget.train_images)
        return {**self.evaluate_transformer("var-builtin", net, "var", "residual", maps), "steps": 700,
                "train_cpu_s": 636.0, "note": "varlite/weights/shapes.pth; steps and CPU time from its model card"}

    def evaluate_transformer(self, stage: str, net, model: str, tokens: str, maps: dict) -> dict:
        """Validation loss, 200 judged samples (a grid of them saved as <stage>_samples.pt) and generation times."""
        val = validation_loss(net, model, maps)
        L = maps["test"].shape[1]
        judge = self.load_judge()
        if model == "ar":
            generate = lambda labels: net.generate(labels, seed=0, **SAMPLING)[0]
        elif tokens == "independent":
            generate = lambda labels: sample_by_refeeding(net, labels, seed=0, **SAMPLING)[0]
        else:
            generate = lambda labels: net.generate(labels, seed=0, **SAMPLING)
        samples, images01 = sample_report(generate, judge, self.test_set, self.budget.per_class)
        grid_u8 = images01.view(10, self.budget.per_class, 3, 32, 32)[:, :8].mul(255).round().to(torch.uint8)
        torch.save(grid_u8, self.out / f"{stage}_samples.pt")        # (classes, 8, 3, 32, 32) uint8
        blocks = sum(p.numel() for p in net.blocks.parameters())
        return {"model": model, "tokens": tokens, "depth": net.config.depth, "width": net.config.embed_dim,
                "heads": net.config.num_heads, "batch_size": 32, "parameters": count_parameters(net),
                "block_parameters": blocks, "tokens_per_image": L,
                "generation_steps": len(net.vqvae.patch_nums) if model == "var" else L,
                "val_loss": val, "val_nll_per_image": val * L, "samples": samples,
                "generation": generation_timing(generate)}

    def ar_steps(self) -> dict:
        """Equal CPU budget: time a few training steps of both claim-1 models side by side (interleaved, same
        batch size, fresh weights) and scale ``steps`` by the ratio of their per-step CPU times."""
        var_recipe = transformer_recipe(self.runs / "unused", "var", "residual", 4, 1, self.threads)
        ar_recipe = transformer_recipe(self.runs / "unused", "ar", "single", 4, 1, self.threads)
        var_maps = token_maps(self.vqvae_of("residual"), "residual", self.runs, self.budget.train_images)
        ar_maps = token_maps(self.vqvae_of("single"), "single", self.runs, self.budget.train_images)
        models = {"var": (build_transformer(var_recipe, self.vqvae_of("residual")), var_maps),
                  "ar": (build_transformer(ar_recipe, self.vqvae_of("single")), ar_maps)}
        cpu = {"var": 0.0, "ar": 0.0}
        for round_ in range(6):
            for kind, (net, maps) in models.items():
                idx = torch.arange(32 * round_, 32 * round_ + 32)
                fn = var_loss if kind == "var" else ar_loss
                c0 = time.process_time()
                fn(net, maps["train_labels"][idx], maps["train"][idx].long(), 0.1).backward()
                if round_ > 0:                  # the first round warms up
                    cpu[kind] += time.process_time() - c0
        ratio = cpu["var"] / cpu["ar"]
        return {"cpu_per_step_var_s": round(cpu["var"] / 5, 4), "cpu_per_step_ar_s": round(cpu["ar"] / 5, 4),
                "ratio": round(ratio, 3), "ar_steps": int(round(self.steps * ratio))}

    # -- everything
    def all(self) -> dict:
        self.run("judge", self.judge)
        self.run("tok-residual", self.residual_tokenizer)
        self.run("tok-single", lambda: self.tokenizer("tok-single", (8,), "residual"))
        self.run("var-d4", lambda: self.transformer("var-d4", "var", "residual", 4, self.steps))
        budget = self.run("ar-budget", self.ar_steps)
        self.run("ar", lambda: self.transformer("ar", "ar", "single", 4, budget["ar_steps"], {"equal_cpu": budget}))
        self.run("var-builtin", self.builtin_var)
        for d in DEPTHS[:3]:
            self.run(f"var-d{d}", lambda d=d: self.transformer(f"var-d{d}", "var", "residual", d, self.steps))
        self.run("tok-independent", lambda: self.tokenizer("tok-independent", SHAPES.vqvae.patch_nums, "independent"))
        self.run("var-independent", lambda: self.transformer("var-independent", "var", "independent", 4, self.steps))
        self.run("tok-residual-rerun", lambda: self.tokenizer("tok-residual-rerun", SHAPES.vqvae.patch_nums, "residual"))
        self.run("var-d5", lambda: self.transformer("var-d5", "var", "residual", 5, self.steps))
        return self.summary()

    def summary(self) -> dict:
        stages = {p.stem: json.loads(p.read_text()) for p in sorted(self.out.glob("*.json")) if p.stem != "summary"}
        series = [stages[f"var-d{d}"] for d in DEPTHS if f"var-d{d}" in stages]
        fits = {}
        if len(series) >= 2:
            losses = [s["val_loss"] for s in series]
            for key in ("parameters", "block_parameters"):
                fit = fit_power_law([s[key] for s in series], losses)
                fits[key] = {"a": fit.a, "b": fit.b, "r": fit.r}
        cpu_total = sum(s.get("stage_cpu_s_this_segment", 0.0) for s in stages.values())
        summary = {"stages": stages, "fits": fits, "depths": [s["depth"] for s in series],
                   "cpu_s_all_stages_last_segments": round(cpu_total, 1), "written": load_info()}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"[reproduce] summary: fits {fits}; CPU seconds (last segment of every stage) {cpu_total:.0f}", flush=True)
        return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250, help="training steps of every VAR (default 250)")
    parser.add_argument("--runs", default=None, help="checkpoints and token maps (default runs/reproduce; with --quick "
                        "runs/reproduce-quick)")
    parser.add_argument("--out", default=None, help="the results (default lessons/data/reproduce, the shipped ones; "
                        "with --quick runs/reproduce-quick/out)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="a few steps per stage: checks that every stage runs")
    parser.add_argument("--summary-only", action="store_true", help="only rewrite summary.json from the stages")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(args.runs) if args.runs else ROOT / "runs" / ("reproduce-quick" if args.quick else "reproduce")
    out = Path(args.out) if args.out else (runs / "out" if args.quick else ROOT / "lessons" / "data" / "reproduce")
    reproduction = Reproduction(runs, out, args.steps, args.threads, QUICK if args.quick else FULL)
    t0, c0 = time.time(), time.process_time()
    reproduction.summary() if args.summary_only else reproduction.all()
    print(f"[reproduce] this invocation: {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU "
          f"({load_info()})", file=sys.stderr)


if __name__ == "__main__":
    main()
