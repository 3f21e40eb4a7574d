"""Training runs on the server: the ``train-var`` run folders inside the model folders, a short card of each, and
how the pages show a path of the model folders.

Runs are looked for only inside ``varlite.pretrained.model_folders()`` (the cache folder and ``VARLITE_MODEL_DIRS``),
up to two levels down; a run folder holds the ``config.json`` of a VAR and the ``checkpoint.pt`` beside it. Every file
is resolved (symbolic links followed) and used only when it lies inside a model folder: a link in a run folder that
leads elsewhere is neither listed, nor loaded, nor shown. The pages show paths relative to the model folder that
holds them, never the server's absolute paths.
"""
from __future__ import annotations

import json
from pathlib import Path

from varlite import pretrained
from varlite.train.metric_log import METRICS_NAME, read_metrics

MAX_RUNS_LISTED = 50               # training runs offered from the model folders


def inside_model_folders(path: Path) -> Path | None:
    """The resolved ``path`` if it lies inside a model folder (symbolic links followed), else None."""
    resolved = Path(path).resolve()
    return resolved if any(resolved.is_relative_to(f) for f in pretrained.model_folders()) else None


def shown_path(path) -> str:
    """``path`` as the pages show it: relative to the model folder holding it (``runs/mine/checkpoint.pt``); a path
    outside every model folder shows its name only."""
    path = Path(path)
    for folder in pretrained.model_folders():
        if path.is_relative_to(folder):
            return str(path.relative_to(folder)) if path != folder else "."
    return path.name


def training_runs() -> list[Path]:
    """train-var run folders inside the model folders (their ``config.json`` names a VAR config and a
    ``checkpoint.pt`` is beside it; the folder and both files resolve inside a model folder), up to two levels down,
    resolved, at most ``MAX_RUNS_LISTED``."""
    runs = []
    for folder in pretrained.model_folders():
        for config in sorted([*folder.glob("*/config.json"), *folder.glob("*/*/config.json")]):
            run = inside_model_folders(config.parent)
            if run is None or inside_model_folders(config) is None or inside_model_folders(
                    config.parent / "checkpoint.pt") is None:
                continue
            try:
                is_var = "var" in json.loads(config.read_text())
            except (OSError, ValueError):
                continue
            if is_var and (config.parent / "checkpoint.pt").is_file():
                runs.append(run)       # a run reached through a link inside the folders is listed once
    return list(dict.fromkeys(runs))[:MAX_RUNS_LISTED]


def run_card(run_dir: Path, configs: dict) -> str:
    """A short markdown card of a training run: preset, dataset, schedule, the last validation row, the latest
    sample grid (an image line of a file in the run folder; files that resolve outside the run folder are left
    out)."""
    train = configs["train"]
    lines = [f"**Training run** `{run_dir.name}`: preset `{train.get('preset')}`, dataset `{train.get('dataset')}`, "
             f"{train.get('steps')} steps of batch {train.get('batch_size')}, guidance of its samples "
             f"{train.get('sample_cfg')}."]
    metrics = run_dir / METRICS_NAME
    if metrics.is_file() and metrics.resolve().is_relative_to(run_dir.resolve()):
        try:
            rows = read_metrics(run_dir, "val")
        except (OSError, ValueError, KeyError):
            rows = []          # a damaged log: the card goes without it
        if rows:
            shown = [f"{k} {rows[-1][k]}" for k in ("step", "val_loss", "val_acc", "val_acc_last") if k in rows[-1]]
            lines.append("Last validation: " + ", ".join(shown) + ".")
    samples = [p for p in sorted(run_dir.glob("samples_*.png")) if p.resolve().is_relative_to(run_dir.resolve())]
    if samples:
        lines.append(f"![its latest samples, one row per class ({samples[-1].name})]({samples[-1].name})")
    return "\n\n".join(lines)
