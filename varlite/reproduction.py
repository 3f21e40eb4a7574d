"""The results of ``recipes/reproduce.py`` (three claims of the VAR paper, small, on Shapes): read, tabulated, drawn.

Lesson 12 calls these on the shipped logs (``lessons/data/reproduce/``). Nothing here trains or samples; the models
and the maths are in ``varlite.baselines`` and the recipe.

Dimension key: N parameters, k = 1..K scale (1-based, as the paper), L tokens per image.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

RESULTS_DIR = Path(__file__).resolve().parents[1] / "lessons" / "data" / "reproduce"
NAMES = {"var-d4": "VAR (next scale)", "ar": "AR (raster order)", "var-builtin": "VAR (built-in)",
         "var-independent": "VAR, independent tokens"}


def load_results(directory: str | Path = RESULTS_DIR) -> dict:
    """``summary.json`` of a reproduction: ``stages`` (one dict per stage), ``fits`` (power laws), ``depths``."""
    path = Path(directory) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `make reproduce` (or python recipes/reproduce.py) to "
                                f"write it, or pass the folder that holds a reproduction's summary.json")
    return json.loads(path.read_text())


def load_samples(stage: str, directory: str | Path = RESULTS_DIR) -> torch.Tensor:
    """A stage's shipped samples: (10 classes, 8, 3, 32, 32) uint8 (cfg 1.5, top-k 20, seed 0)."""
    return torch.load(Path(directory) / f"{stage}_samples.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------------- tables
def model_row(stage: dict, timing: bool = True) -> dict:
    """The numbers of one transformer stage that the claims compare (``timing``: with its generation wall times)."""
    gen = stage["generation"]
    row = {"model": NAMES.get(stage["stage"], stage["stage"]), "parameters": stage["parameters"],
           "tokens/image": stage["tokens_per_image"], "generation steps": stage["generation_steps"],
           "train steps": stage["steps"], "train CPU s": stage["train_cpu_s"],
           "val loss (nats/token)": round(stage["val_loss"], 3),
           "val NLL (nats/image)": round(stage["val_nll_per_image"], 1),
           "class-consistency": round(stage["samples"]["class_consistency"], 3),
           "Frechet distance": round(stage["samples"]["frechet"]["fd_samples"], 3)}
    if timing:
        row.update({"generate 1 image (s)": gen["batch1"]["wall_s"], "generate 10 images (s)": gen["batch10"]["wall_s"]})
    return row


def tokenizer_row(stage: dict) -> dict:
    """The numbers of one tokenizer stage: held-out reconstruction and the tokens it spends per image."""
    return {"tokenizer": stage["stage"].removeprefix("tok-"), "scales": len(stage["patch_nums"]),
            "tokens/image": stage["tokens_per_image"], "PSNR (dB)": round(stage["psnr"], 2),
            "SSIM": round(stage["ssim"], 3), "train CPU s": stage["train_cpu_s"]}


def format_table(rows: Sequence[dict]) -> str:
    """Rows of equal keys as a fixed-width text table, one column per key."""
    keys = list(rows[0])
    cells = [[str(k) for k in keys]] + [[f"{r[k]:,}" if isinstance(r[k], int) else str(r[k]) for k in keys]
                                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def cpu_report(results: dict) -> tuple[str, float]:
    """CPU and wall time of every stage, with the load average at its start (the machine may have been shared), and
    the reproduction's total CPU seconds: per stage the larger of its last segment's CPU time and its training's CPU
    time over all segments (a stage resumed after a stop logs only its last segment); the built-in models' own
    training (from their model card, marked by a ``note``) is not counted."""
    rows, total = [], 0.0
    for name, stage in results["stages"].items():
        if "stage_cpu_s_this_segment" not in stage:
            continue
        trained_here = "train_cpu_s" in stage and "note" not in stage
        rows.append({"stage": name, "training CPU s": stage["train_cpu_s"] if trained_here else "-",
                     "stage CPU s": stage["stage_cpu_s_this_segment"], "stage wall s": stage["stage_wall_s"],
                     "load at start": stage["load_at_start"]["loadavg_1_5_15"][0]})
        total += max(stage["stage_cpu_s_this_segment"], stage["train_cpu_s"] if trained_here else 0.0)
    return format_table(rows), total


# ---------------------------------------------------------------------------------------------------- figures
def learning_curves_figure(results: dict, stages: Sequence[str] = ("var-d4", "ar")) -> Figure:
    """Validation loss (nats per token) against the CPU seconds of training used so far, one line per model."""
    fig = Figure(figsize=(6.2, 3.4))
    ax = fig.subplots()
    for name in stages:
        val = results["stages"][name]["curve"]["val"]
        ax.plot([v[2] for v in val], [v[1] for v in val], "o-", label=NAMES.get(name, name))
    ax.set_xlabel("training CPU seconds (incl. evaluations)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("equal CPU budget: loss per token of each model's own tokens")
    ax.legend()
    fig.tight_layout()
    return fig


def samples_figure(grids: Sequence[torch.Tensor], titles: Sequence[str], class_names: Sequence[str] | None = None,
                   per_class: int = 4) -> Figure:
    """Side-by-side sample grids (one row per class, ``per_class`` columns) of several models."""
    fig = Figure(figsize=(2.3 * len(grids) + 0.6, 5.6))
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid, title in zip(axes, grids, titles):
        picked = grid[:, :per_class]                                       # (classes, n, 3, 32, 32)
        C, n, _, S, _ = picked.shape
        mosaic = picked.permute(0, 3, 1, 4, 2).reshape(C * S, n * S, 3)
        ax.imshow(mosaic.numpy())
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([S * (c + 0.5) for c in range(C)])
        ax.set_yticklabels(class_names if class_names is not None and ax is axes[0] else [""] * C, fontsize=7)
    fig.tight_layout()
    return fig


def prefix_psnr_figure(results: dict) -> Figure:
    """PSNR of the image decoded after scales 1..k, for residual (the built-in tokenizer and its rerun by the
    recipe) and independent tokens; the single-scale tokenizer's one point at its 64 tokens for reference.
    x: tokens spent so far."""
    fig = Figure(figsize=(6.2, 3.4))
    ax = fig.subplots()
    for name, style in (("tok-residual", "o-"), ("tok-residual-rerun", "o--"), ("tok-independent", "s-")):
        stage = results["stages"].get(name)
        if stage is None:
            continue
        spent = np.cumsum([pn * pn for pn in stage["patch_nums"]])
        ax.plot(spent, stage["prefix_psnr"], style, label=f"{name.removeprefix('tok-')} ({len(spent)} scales)")
        if name == "tok-residual":
            for k, (x, y) in enumerate(zip(spent, stage["prefix_psnr"]), start=1):
                ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
    single = results["stages"].get("tok-single")
    if single is not None:
        ax.plot([single["tokens_per_image"]], [single["psnr"]], "k*", markersize=11, label="single scale (8x8)")
    ax.set_xlabel("tokens per image spent up to scale k")
    ax.set_ylabel("PSNR of the decoded image (dB)")
    ax.set_title("what the first k scales reconstruct (held-out Shapes)")
    ax.legend()
    fig.tight_layout()
    return fig


def scaling_figure(results: dict, key: str = "parameters") -> Figure:
    """Validation loss against parameters on log-log axes for the depth series, with the fitted power law."""
    series = [results["stages"][f"var-d{d}"] for d in results["depths"]]
    n = np.array([s[key] for s in series], dtype=float)
    loss = np.array([s["val_loss"] for s in series])
    fit = results["fits"][key]
    fig = Figure(figsize=(6.2, 3.6))
    ax = fig.subplots()
    ax.loglog(n, loss, "o", label="VAR, depth " + ", ".join(str(s["depth"]) for s in series))
    grid = np.geomspace(n.min() / 1.3, n.max() * 1.3, 50)
    ax.loglog(grid, fit["a"] * grid ** fit["b"], "-",
              label=f"fit: loss = {fit['a']:.3g} N^({fit['b']:.3f}),  r = {fit['r']:.4f}")
    for s, x, y in zip(series, n, loss):
        ax.annotate(f"d{s['depth']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%.2f"))
    ax.set_xlabel("parameters N" if key == "parameters" else "parameters of the blocks only")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"loss vs size after {series[0]['steps']} steps x {series[0]['batch_size']} (one seed each)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

