"""The training loop shared by the tokenizer, the transformer and the classifier, and its plumbing.

Dimension key: B batch (global, over all processes), b batch of one process (B / world), N dataset size.

What makes a run exactly resumable: everything random is either a pure function of (seed, step) or saved.
- Data order: epoch e = step // (N // B) uses ``randperm(N)`` from a generator seeded with (seed, e); step s takes
  the s-th slice of B indices and process r takes every world-th of them, starting at r.
- Learning rate: a pure function of the step (linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak).
- Everything else that draws random numbers (class dropout, augmentation) uses the global RNGs, whose states
  (torch, CUDA, numpy, python) are saved per process in the checkpoint with the model, the optimizer and the step.

Ctrl-C / SIGTERM only raise a flag; the loop finishes the current step, saves a checkpoint and stops.
Data parallel: started by ``torchrun`` (it sets RANK / WORLD_SIZE), gradients are averaged by DDP (gloo on CPU).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from ..device import pick_device
from ..safe_io import CheckpointError
from .checkpoint import check_same_config, load_checkpoint, save_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"
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
    precision: str = "fp32"          # fp32 | bf16: bf16 runs the forward pass under autocast (weights stay float32)

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")


# ----------------------------------------------------------------------------------------------------- devices
@dataclass
class Dist:
    """This process's place in a data-parallel run (rank 0 of 1 when not started by torchrun)."""
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean(self, values: list[float]) -> list[float]:
        """The mean of each value over all processes (every process gets the same numbers)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def any(self, flag: bool) -> bool:
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup_distributed(device_name: str = "auto") -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


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


def capture_rng() -> dict:
    """The states of every global RNG as plain types (loadable with weights_only=True)."""
    key, mt, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"key": key, "mt": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["mt"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


# ----------------------------------------------------------------------------------------------------- stopping, progress, logs
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


def format_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """A one-line progress bar with rate and ETA on stderr; on a non-terminal, a plain line every ``interval`` s."""

    def __init__(self, label: str, total: int, start: int, enabled: bool = True, stream=None, interval: float = 30.0):
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.t0 = self.t_last = time.time()

    def line(self, done: int, postfix: str = "") -> str:
        frac = done / max(1, self.total)
        elapsed = time.time() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        eta_s = format_seconds(eta) if rate > 0 else "?"
        return (f"{self.label} {100 * frac:3.0f}% |{bar}| {done}/{self.total} "
                f"[{format_seconds(elapsed)}<{eta_s}, {rate:.2f} it/s] {postfix}")

    def update(self, done: int, postfix: str = "", force: bool = False) -> None:
        if not self.enabled or (not force and time.time() - self.t_last < self.interval and done < self.total):
            return
        self.t_last = time.time()
        end = "" if self.tty else "\n"
        self.stream.write(("\r" if self.tty else "") + self.line(done, postfix) + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class MetricLog:
    """Metrics as JSON lines (``metrics.jsonl``) and one CSV per split (``metrics_<split>.csv``) in the run dir.

    A training row holds the means over one logging window (the steps since the last row): ``add`` sums a step's
    values, ``take_window`` returns their means and opens a new window. The open window (sums and count, per
    process) goes into the checkpoint (``window_state`` / ``load_window``), so a run stopped in mid-window writes,
    once resumed, the very row an uninterrupted run writes.

    On resume from step s (``keep_until(s)``), rows logged after s (by the interrupted process) are dropped, so the
    files read as if the run had never stopped; a torn last line (a write cut short, e.g. by a power loss) is
    dropped with a warning.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, enabled: bool = True):
        """``resume_step``: drop the rows after it at once (None: leave the files; ``keep_until`` does it later)."""
        self.dir, self.enabled = Path(run_dir), enabled
        self.jsonl = self.dir / "metrics.jsonl"
        self.sums: dict[str, float] = {}
        self.count = 0
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.keep_until(resume_step)

    # the logging window ---------------------------------------------------------------------------
    def add(self, values: dict[str, float]) -> None:
        """Add one step's values to the open window."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def take_window(self) -> dict[str, float]:
        """{name: sum / count} of the open window, names sorted; the window is then empty."""
        means = {k: self.sums[k] / self.count for k in sorted(self.sums)}
        self.sums, self.count = {}, 0
        return means

    def window_state(self) -> dict:
        """The open window as plain types, for the checkpoint."""
        return {"sums": dict(self.sums), "count": self.count}

    def load_window(self, state: dict | None) -> None:
        """Reopen a saved window (None: a checkpoint from before windows were saved; start empty)."""
        self.sums, self.count = (dict(state["sums"]), int(state["count"])) if state else ({}, 0)

    # the files ------------------------------------------------------------------------------------
    def keep_until(self, step: int) -> None:
        """Drop every row logged after ``step`` (and a torn last line) from the files."""
        if not self.enabled:
            return
        if self.jsonl.exists():
            rows = self._read_jsonl()
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))
        for path in self.dir.glob("metrics_*.csv"):
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and (None in rows[-1].values() or None in rows[-1]):     # fewer or more fields: torn
                self._warn_torn(path)
                rows = rows[:-1]
            kept = [r for r in rows if int(r["step"]) <= step]
            if rows:
                self._write_csv(path, list(rows[0].keys()), kept, "w")

    def _read_jsonl(self) -> list[dict]:
        lines = [line for line in self.jsonl.read_text().splitlines() if line.strip()]
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise ValueError(f"{self.jsonl} line {i + 1} of {len(lines)} is not JSON: the file is damaged in "
                                     f"the middle. Delete the file (the checkpoint does not need it) or repair that "
                                     f"line, then resume") from None
                self._warn_torn(self.jsonl)
        return rows

    @staticmethod
    def _warn_torn(path: Path) -> None:
        warnings.warn(f"{path}: dropped a torn last line (a write cut short, e.g. by a power loss)", stacklevel=3)

    @staticmethod
    def _write_csv(path: Path, columns: list[str], rows: list[dict], mode: str) -> None:
        with open(path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)

    def write(self, split: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"split": split, **row}) + "\n")
        path = self.dir / f"metrics_{split}.csv"
        if path.exists():
            with open(path, newline="") as f:
                columns = next(csv.reader(f))
            if columns != list(row):
                raise ValueError(f"{path} has columns {columns}, but this run logs {list(row)}; use a new run dir")
            self._write_csv(path, columns, [row], "a")
        else:
            self._write_csv(path, list(row), [row], "w")


def state_fingerprint(module: nn.Module) -> str:
    """sha256 of every tensor of a module's state dict (names and bytes)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def config_dict(cfg) -> dict:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


# ----------------------------------------------------------------------------------------------------- the loop
@dataclass
class RunResult:
    run_dir: Path
    step: int
    finished: bool                   # all ``steps`` done
    metrics: dict                    # the last held-out evaluation
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

    def __init__(self, cfg: LoopConfig, distributed: Dist | None = None):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = distributed or setup_distributed(cfg.device)
        self.device = self.dist.device
        self.run_dir = Path(cfg.run_dir)
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
        return {"train": config_dict(self.cfg)}

    # machinery -----------------------------------------------------------------------------------
    def autocast(self):
        """The forward pass's precision: bfloat16 autocast for ``--precision bf16`` (on a CPU with AMX / AVX-512
        bf16 matmuls run ~3x faster than float32), else a no-op context. Weights, gradients, AdamW stay float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        if not self.dist.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def make_optimizer(self, module: nn.Module, betas=(0.9, 0.95)) -> torch.optim.Optimizer:
        """AdamW; weight decay only on matrices (ndim >= 2), not on biases, norms, embeddings' 1-D params."""
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=betas)

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
        now = self.checkpoint_configs()
        for name, saved in ckpt["configs"].items():
            if name not in now:
                raise CheckpointError(f"{self.ckpt_path} stores a {name!r} config this trainer does not know")
            keep = {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES}
            want = {k: v for k, v in now[name].items() if k not in RESUMABLE_CHANGES}
            check_same_config(keep, want, name, self.ckpt_path)
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

    def check_replicas_agree(self) -> None:
        """In a data-parallel run, every process must end with bit-identical weights."""
        if not self.dist.active:
            return
        fingerprints = self.dist.gather(state_fingerprint(self.model))
        if len(set(fingerprints)) != 1:
            raise RuntimeError(f"data-parallel processes ended with different weights (fingerprints {fingerprints})")
        if self.dist.main:
            print(f"all {self.dist.world} processes hold identical weights", file=sys.stderr, flush=True)

    def run(self) -> RunResult:
        cfg, main = self.cfg, self.dist.main
        self.log = log = MetricLog(self.run_dir, enabled=main)     # before resume(), which reopens its window
        start = self.resume()
        if start == 0:
            seed_everything(cfg.seed + 1000 * self.dist.rank)
        log.keep_until(start)
        if main:
            (self.run_dir / "config.json").write_text(json.dumps(self.checkpoint_configs(), indent=1))
        order = DataOrder(self.num_items, cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world)
        progress = Progress(self.label, cfg.steps, start, enabled=main and cfg.progress)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        metrics, step, postfix = {}, start, ""
        with StopFlag() as stop:
            for step in range(start, cfg.steps):
                lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.train_module.train()
                with self.autocast():
                    loss, logs = self.compute_loss(order.indices(step).to(self.device), step)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                self.optimizer.step()
                self.after_step(step)
                log.add({**logs, "grad_norm": float(grad_norm)})
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    window = log.take_window()
                    means = self.dist.mean(list(window.values()))
                    row = {"lr": lr, "epoch": round(done / order.steps_per_epoch, 4), **dict(zip(window, means))}
                    log.write("train", done, row)
                    postfix = " ".join(f"{k}={row[k]:.4g}" for k in self.bar_keys if k in row)
                progress.update(done, postfix)
                interrupted = self.dist.any(stop.requested)
                stopping = interrupted or (0 < cfg.stop_at <= done < cfg.steps)
                if stopping or done % cfg.ckpt_every == 0 or done == cfg.steps:
                    self.save(done)
                if stopping:
                    progress.close()
                    if main:
                        print(f"stopped at step {done}/{cfg.steps}; checkpoint saved to {self.ckpt_path}. Run the same "
                              f"command again to resume.", file=sys.stderr, flush=True)
                    return RunResult(self.run_dir, done, False, metrics, interrupted)
                last = done == cfg.steps
                if main and ((cfg.eval_every and done % cfg.eval_every == 0) or last):
                    with torch.random.fork_rng(devices=[]):
                        metrics = self.evaluate()
                    if metrics:
                        log.write("val", done, metrics)
                if main and ((cfg.sample_every and done % cfg.sample_every == 0) or last):
                    with torch.random.fork_rng(devices=[]):
                        self.write_samples(done)
                self.dist.barrier()
        progress.update(cfg.steps, postfix, force=True)
        progress.close()
        self.check_replicas_agree()
        if main and start >= cfg.steps:
            print(f"{self.run_dir} already finished {start} of {cfg.steps} steps; nothing to do", file=sys.stderr)
        return RunResult(self.run_dir, max(start, cfg.steps), True, metrics)


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
