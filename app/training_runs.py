"""Training runs on the server: the ``train-var`` run folders inside the model folders, and a short card of each.

Runs are looked for only inside ``varlite.pretrained.model_folders()`` (the cache folder and ``VARLITE_MODEL_DIRS``),
up to two levels down; a run folder holds the ``config.json`` of a VAR and the ``checkpoint.pt`` beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

from varlite import pretrained

MAX_RUNS_LISTED = 50               # training runs offered from the model folders


def training_runs() -> list[Path]:
    """train-var run folders inside the model folders (their ``config.json`` names a VAR config and a
    ``checkpoint.pt`` is beside it), up to two levels down, resolved, at most ``MAX_RUNS_LISTED``."""
    runs = []
    for folder in pretrained.model_folders():
        for config in sorted([*folder.glob("*/config.json"), *folder.glob("*/*/config.json")]):
            try:
                is_var = "var" in json.loads(config.read_text())
            except (OSError, ValueError):
                continue
            if is_var and (config.parent / "checkpoint.pt").is_file():
                runs.append(config.parent.resolve())       # a run reached through a link is listed once
    return list(dict.fromkeys(runs))[:MAX_RUNS_LISTED]


def run_card(run_dir: Path, configs: dict) -> str:
    """A short markdown card of a training run: preset, dataset, schedule, the last validation row, the latest
    sample grid (an image line of a file in the run folder)."""
    train = configs["train"]
    lines = [f"**Training run** `{run_dir.name}`: preset `{train.get('preset')}`, dataset `{train.get('dataset')}`, "
             f"{train.get('steps')} steps of batch {train.get('batch_size')}, guidance of its samples "
             f"{train.get('sample_cfg')}."]
    val = run_dir / "metrics_val.csv"
    if val.is_file():
        rows = val.read_text().strip().splitlines()
        if len(rows) > 1:
            head, last = rows[0].split(","), rows[-1].split(",")
            shown = [f"{k} {v}" for k, v in zip(head, last) if k in ("step", "val_loss", "val_acc", "val_acc_last")]
            lines.append("Last validation: " + ", ".join(shown) + ".")
    samples = sorted(run_dir.glob("samples_*.png"))
    if samples:
        lines.append(f"![its latest samples, one row per class ({samples[-1].name})]({samples[-1].name})")
    return "\n\n".join(lines)
