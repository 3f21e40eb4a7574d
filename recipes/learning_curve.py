"""Plot a train-var run's learning curve for its model card: validation loss and class-consistency (both logged at
every evaluation when the run has a --judge) against the CPU-hours the run had used by then.

Usage: python recipes/learning_curve.py RUN_DIR OUT.png [--title TEXT]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

from varlite.train.metric_log import read_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    rows = [r for r in read_metrics(args.run_dir, "val") if "cpu_hours" in r and "class_consistency" in r]
    if not rows:
        raise SystemExit(f"{args.run_dir}/metrics.jsonl has no evaluations with cpu_hours and class_consistency; "
                         f"train with --judge")
    hours = [r["cpu_hours"] for r in rows]
    fig, ax_loss = plt.subplots(figsize=(6, 3.6))
    ax_loss.plot(hours, [r["val_loss"] for r in rows], "o-", color="tab:blue")
    ax_loss.set_xlabel("CPU-hours (user + system, all threads)")
    ax_loss.set_ylabel("validation loss (nats/token)", color="tab:blue")
    ax_cc = ax_loss.twinx()
    ax_cc.plot(hours, [r["class_consistency"] for r in rows], "s-", color="tab:red")
    ax_cc.set_ylabel("class-consistency", color="tab:red")
    ax_cc.set_ylim(0, 1)
    ax_loss.set_title(args.title or Path(args.run_dir).name)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(rows)} evaluations)")


if __name__ == "__main__":
    main()
