"""The training loop shared by the tokenizer, the transformer and the classifier, and its plumbing.

Dimension key: B batch (global, over all processes), b batch of one process (B / world), N dataset size.

What makes a run exactly resumable: everything random is either a pure function of (seed, step) or saved.
- Data order: epoch e = step // (N // B) uses ``randperm(N)`` from a generator seeded with (seed, e); step s takes
  the s-th slice of B indices and process r takes every world-th of them, starting at r.
- Learning rate: a pure function of the step (linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak).
- Everything else that draws random numbers (class dropout, augmentation) uses the global RNGs, whose states
  (torch, CUDA, numpy, python; ``varlite.train.rng``) are saved per process in the checkpoint with the model, the
  optimizer and the step.

Ctrl-C / SIGTERM (in a notebook: Kernel -> Interrupt) only raise a flag; the loop finishes the current step, saves a
checkpoint, measures the held-out metrics of those weights and returns them (``RunResult.interrupted``).
Data parallel: started by ``torchrun`` (``varlite.train.distributed``); gradients are averaged by DDP.
"""
from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn

from ..device import cpu_features, resolve_precision
from ..safe_io import CheckpointError
from .checkpoint import check_same_config, load_checkpoint, save_checkpoint
from .distributed import Dist, setup_distributed
from .metric_log import MetricLog
from .progress import Progress
from .rng import capture_rng, restore_rng, seed_everything

CHECKPOINT_NAME = "checkpoint.pt"
PRECISIONS = ("fp32", "bf16", "auto")       # --precision: auto = bf16 where the device has bfloat16 matmul units
# fields of a config that may change between a run and its resumption (they do not change the maths)
RESUMABLE_CHANGES = {"run_dir", "device", "threads", "log_every", "eval_every", "sample_every", "ckpt_every",
                     "steps", "stop_at", "progress", "eval_images", "encode_first", "judge", "judge_per_class"}


@dataclass
class LoopConfig:
    """Settings every trainer shares. ``steps`` may be changed on resume (the cosine schedule then follows it)."""
    run_dir: str
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3                 # peak learning rate, reached after warm-up
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1        # the cosine decays from lr to lr * min_lr_ratio
    grad_clip: float = 2.0           # max global gradient norm (0 = off)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500            # 0 = only at the end
    sample_every: int = 500          # 0 = only at the end
    ckpt_every: int = 200
    device: str = "auto"             # auto | cpu | cuda | cuda:N | mps
    threads: int = 0                 # torch CPU threads (0 = torch's default)
    progress: bool = True
    stop_at: int = 0                 # save and stop after this step (0 = run to ``steps``); rerun to continue
    precision: str = "fp32"          # fp32 | bf16 | auto: bf16 runs the forward pass under autocast (weights stay
                                     # float32); auto = bf16 where the device has bfloat16 matmul units, else fp32

    def __post_init__(self):
        """Refuse settings that cannot run (checked before anything is loaded or written), naming the option."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be fp32, bf16 or auto, got {self.precision!r}")
        at_least = {"steps": 1, "batch_size": 1, "log_every": 1, "ckpt_every": 1, "eval_every": 0,
                    "sample_every": 0, "warmup_steps": 0, "stop_at": 0, "threads": 0, "seed": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if not (isinstance(value, int) and low <= value <= 2 ** 63 - 1):
                meaning = {0: " (0 = off or the default)", 1: ""}[low]
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {low}{meaning}; got {value!r}")
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "lr" and value == 0) or \
                    (name == "min_lr_ratio" and value > 1):
                allowed = {"lr": "> 0", "min_lr_ratio": "in [0, 1]"}.get(name, ">= 0")
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number {allowed}; got {value!r}")
        if Path(self.run_dir).exists() and not Path(self.run_dir).is_dir():
            raise ValueError(f"--run-dir {self.run_dir} is a file; give a folder (made if missing) for the run's "
                             f"checkpoint, metrics and samples")


# ----------------------------------------------------------------------------------------------------- schedule, data order, RNG
def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak * min_ratio`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


class DataOrder:
    """Which dataset items each step uses: a fresh permutation per epoch, seeded by (seed, epoch); drop-last."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of processes ({world})")
        if n < batch_size:
            raise ValueError(f"the dataset has {n} items, fewer than one batch of {batch_size}; lower --batch-size")
        self.n, self.B, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps_per_epoch = n // batch_size
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> torch.Tensor:
        """This process's item indices (b = B / world of them) for ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=g)
        return self._order[pos * self.B:(pos + 1) * self.B][self.rank::self.world]


# ----------------------------------------------------------------------------------------------------- stopping, fingerprints
class StopFlag:
    """Turns SIGINT / SIGTERM into a request to stop after the current step (restores the old handlers on exit)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:          # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:              # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
              f"(press Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def state_fingerprint(module: nn.Module) -> str:
    """sha256 of every tensor of a module's state dict (names and bytes)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def config_dict(config) -> dict:
    """A config dataclass as {field: value}."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


# ----------------------------------------------------------------------------------------------------- the loop
@dataclass
class RunResult:
    """What ``Trainer.run`` returns. ``metrics`` are the held-out metrics of the weights at ``step`` (on the main
    process; {} on the others, after a ``stop_at`` between two evaluations, or when the run had already finished)."""
    run_dir: Path
    step: int                        # steps done; the checkpoint in run_dir holds the weights after them
    finished: bool                   # all ``steps`` done
    metrics: dict
    interrupted: bool = False        # stopped by Ctrl-C / SIGTERM (not by ``stop_at``)


class Trainer:
    """Runs ``steps`` optimisation steps of ``compute_loss`` with AdamW, the schedule, clipping, logs and checkpoints.

    Subclasses build ``self.model`` (the module whose state is saved), ``self.train_module`` (it, or its DDP
    wrapper) and ``self.optimizer``, set ``self.num_items``, and implement ``compute_loss(idx_b, step) -> (loss,
    logs)``; they may override ``after_step``, ``evaluate``, ``write_samples``, ``extra_state`` / ``load_extra_state``
    and ``checkpoint_configs``.
    """
    kind = "?"
    label = "train"
    bar_keys = ("loss",)              # logged values shown on the progress bar

    def __init__(self, config: LoopConfig, distributed: Dist | None = None):
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.dist = distributed or setup_distributed(config.device)
        self.device = self.dist.device
        self.precision = resolve_precision(config.precision, self.device)
        if config.precision == "auto" and self.dist.main and config.progress:
            where = f"CPU: {cpu_features()}" if self.device.type == "cpu" else f"device {self.device}"
            print(f"--precision auto: {self.precision} ({where})", file=sys.stderr, flush=True)
        self.run_dir = Path(config.run_dir)
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME

    # hooks ---------------------------------------------------------------------------------------
    def compute_loss(self, idx_b: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called on every process after the optimizer step of ``step`` (0-based)."""

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (called on the main process only)."""
        return {}

    def write_samples(self, step: int) -> None:
        """Write a sample grid into the run dir (main process only)."""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def checkpoint_configs(self) -> dict[str, dict]:
        """Configs stored in (and checked against) the checkpoint, by name."""
        return {"train": config_dict(self.config)}

    # machinery -----------------------------------------------------------------------------------
    def autocast(self):
        """The forward pass's precision: bfloat16 autocast for bf16 (``--precision bf16``, or ``auto`` on a device
        with bfloat16 matmul units: there the transformer step ran 1.3x and the tokenizer 2.5x faster than float32;
        on an AVX2-only CPU bfloat16 is emulated and slower), else a no-op context. Weights, gradients and AdamW
        stay float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not self.dist.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def make_optimizer(self, module: nn.Module, betas=(0.9, 0.95)) -> torch.optim.Optimizer:
        """AdamW; weight decay only on matrices (ndim >= 2), not on biases, norms, embeddings' 1-D params."""
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=betas)

    def state(self, step: int) -> dict:
        return {"kind": self.kind, "step": step, "configs": self.checkpoint_configs(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.dist.gather(capture_rng()), "world": self.dist.world, "extra": self.extra_state(),
                "log_window": self.dist.gather(self.log.window_state())}

    def save(self, step: int) -> None:
        state = self.state(step)            # every process takes part (RNG states are gathered)
        if self.dist.main:
            save_checkpoint(self.ckpt_path, state)
        self.dist.barrier()

    def resume(self) -> int:
        """Load ``run_dir/checkpoint.pt`` if there is one; return the step to start from."""
        if not self.ckpt_path.exists():
            return 0
        ckpt = load_checkpoint(self.ckpt_path, self.kind)
        self.check_resumable(ckpt["configs"])
        if ckpt["world"] != self.dist.world:
            raise CheckpointError(f"{self.ckpt_path} was written by a run with {ckpt['world']} processes; resume it "
                                  f"with the same number (now {self.dist.world}) for an exact continuation")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.ckpt_path} does not fit this model ({str(err)[:300]})") from err
        self.load_extra_state(ckpt["extra"])
        restore_rng(ckpt["rng"][self.dist.rank])
        self.log.load_window(ckpt.get("log_window", [None] * self.dist.world)[self.dist.rank])
        return int(ckpt["step"])

    def check_resumable(self, saved_configs: dict) -> None:
        """The checkpoint's configs must equal this run's, but for the options that may change on resume."""
        now = self.checkpoint_configs()
        for name, saved in saved_configs.items():
            if name not in now:
                raise CheckpointError(f"{self.ckpt_path} stores a {name!r} config this trainer does not know")
            keep = {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES}
            want = {k: v for k, v in now[name].items() if k not in RESUMABLE_CHANGES}
            check_same_config(keep, want, name, self.ckpt_path)

    def check_replicas_agree(self) -> None:
        """In a data-parallel run, every process must end with bit-identical weights."""
        if not self.dist.active:
            return
        fingerprints = self.dist.gather(state_fingerprint(self.model))
        if len(set(fingerprints)) != 1:
            raise RuntimeError(f"data-parallel processes ended with different weights (fingerprints {fingerprints})")
        if self.dist.main:
            print(f"all {self.dist.world} processes hold identical weights", file=sys.stderr, flush=True)

    # the loop ------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train from ``run_dir``'s checkpoint (or from scratch) until ``steps`` are done, ``stop_at`` is reached or
        Ctrl-C / SIGTERM asks to stop; every stop leaves a checkpoint to resume from."""
        config = self.config
        start = self.start()
        order = DataOrder(self.num_items, config.batch_size, config.seed, self.dist.rank, self.dist.world)
        progress = Progress(self.label, config.steps, start, enabled=self.dist.main and config.progress)
        metrics = {}
        with StopFlag() as stop:
            for step in range(start, config.steps):
                logs = self.train_step(order.indices(step).to(self.device), step)
                done = step + 1
                row = self.log_step(done, logs, done / order.steps_per_epoch)
                progress.update(done, self.bar_text(row) if row else None)
                interrupted = self.dist.any(stop.requested)
                stopping = done < config.steps and (interrupted or 0 < config.stop_at <= done)
                if stopping or done % config.ckpt_every == 0 or done == config.steps:
                    self.save(done)
                metrics = self.evaluate_and_sample(done)
                if stopping:
                    progress.close()
                    return self.stopped(done, metrics, interrupted)
                self.dist.barrier()
        progress.update(config.steps, force=True)
        progress.close()
        self.check_replicas_agree()
        if self.dist.main and start >= config.steps:
            print(f"{self.run_dir} already finished {start} of {config.steps} steps; nothing to do", file=sys.stderr)
        return RunResult(self.run_dir, max(start, config.steps), True, metrics)

    def start(self) -> int:
        """Open the log, resume from the checkpoint if there is one (else seed the RNGs), write config.json;
        returns the step to start from."""
        self.log = MetricLog(self.run_dir, enabled=self.dist.main)     # before resume(), which reopens its window
        start = self.resume()
        if start == 0:
            seed_everything(self.config.seed + 1000 * self.dist.rank)
        self.log.keep_until(start)
        if self.dist.main:
            (self.run_dir / "config.json").write_text(json.dumps(self.checkpoint_configs(), indent=1))
        return start

    def learning_rate(self, step: int) -> float:
        config = self.config
        return lr_at(step, config.steps, config.lr, config.warmup_steps, config.min_lr_ratio)

    def train_step(self, idx_b: torch.Tensor, step: int) -> dict[str, float]:
        """One optimisation step (0-based ``step``) on the items ``idx_b``: the scheduled learning rate, the loss,
        backward, gradient clipping, AdamW, ``after_step``. Returns the step's logged values."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.train_module.train()
        with self.autocast():
            loss, logs = self.compute_loss(idx_b, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.after_step(step)
        return {**logs, "grad_norm": float(grad_norm)}

    def log_step(self, done: int, logs: dict[str, float], epoch: float) -> dict | None:
        """Add a step's values to the logging window; at the end of a window (every ``log_every`` steps, and the
        last step) write the "train" row (window means over all processes, the learning rate, the epoch) and
        return it; else None."""
        self.log.add(logs)
        if done % self.config.log_every and done != self.config.steps:
            return None
        window = self.log.take_window()
        means = self.dist.mean(list(window.values()))
        row = {"lr": self.learning_rate(done - 1), "epoch": round(epoch, 4), **dict(zip(window, means))}
        self.log.write("train", done, row)
        return row

    def bar_text(self, row: dict) -> str:
        return " ".join(f"{k}={row[k]:.4g}" for k in self.bar_keys if k in row)

    def evaluate_and_sample(self, done: int) -> dict:
        """After step ``done``, on the main process: the held-out evaluation (logged as a "val" row) when one is due
        (every ``eval_every`` steps and the last), a sample grid when one is due; neither touches the training
        RNGs. Returns the metrics, or {} when no evaluation was due."""
        config, last = self.config, done == self.config.steps
        metrics = {}
        if self.dist.main and ((config.eval_every and done % config.eval_every == 0) or last):
            with torch.random.fork_rng(devices=[]):
                metrics = self.evaluate()
            if metrics:
                self.log.write("val", done, metrics)
        if self.dist.main and ((config.sample_every and done % config.sample_every == 0) or last):
            with torch.random.fork_rng(devices=[]):
                self.write_samples(done)
        return metrics

    def stopped(self, done: int, metrics: dict, interrupted: bool) -> RunResult:
        """The result of a run stopped after step ``done`` (its checkpoint saved). After Ctrl-C / SIGTERM the main
        process also measures the held-out metrics of these weights, unless that evaluation was just logged (not
        logged: a resumed run must log what an uninterrupted one logs)."""
        if self.dist.main:
            print(f"stopped at step {done}/{self.config.steps}; checkpoint saved to {self.ckpt_path}. Run the same "
                  f"command again to resume.", file=sys.stderr, flush=True)
        if interrupted and self.dist.main and not metrics:
            print("measuring the held-out metrics of these weights (Ctrl-C again aborts that; the checkpoint is "
                  "saved)", file=sys.stderr, flush=True)
            with torch.random.fork_rng(devices=[]):
                metrics = self.evaluate()
        return RunResult(self.run_dir, done, False, metrics, interrupted)


# ----------------------------------------------------------------------------------------------------- data
def load_checked(name: str, split: str, root: str | None, image_size: int, num_classes: int | None = None):
    """Load a varlite dataset and check it fits the model: square images of ``image_size`` pixels, and labels in
    0..num_classes-1 (when given). Missing or damaged files raise ``varlite.data.DatasetError``."""
    from varlite.data import load_dataset
    dataset = load_dataset(name, split, root)
    if dataset.image_size != image_size or dataset.images_u8.shape[-2] != image_size:
        raise ValueError(f"the {name} {split} images are {tuple(dataset.images_u8.shape[-2:])} pixels but this model "
                         f"takes {image_size}x{image_size}; choose a preset whose image size is "
                         f"{dataset.image_size}, or resize the data")
    if num_classes is not None:
        bad = dataset.labels[(dataset.labels < 0) | (dataset.labels >= num_classes)]
        if bad.numel():
            raise ValueError(f"the {name} {split} split has label {int(bad[0])}, outside 0..{num_classes - 1} for "
                             f"this model's {num_classes} classes; choose a preset with num_classes >= "
                             f"{int(dataset.labels.max()) + 1}")
    return dataset
