"""Progress on stderr (varlite.train.progress): a tqdm bar redrawn in place on a terminal; elsewhere (CI logs, files,
notebooks) a plain line at most every interval and one at the end. evaluate shows which of its stages runs."""
from __future__ import annotations

import io
import sys

import torch

from varlite.train import evaluate
from varlite.train.progress import Progress


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_tqdm_bar_is_redrawn_in_place():
    stream = Terminal()
    progress = Progress("train", total=10, start=4, stream=stream)          # resumed at step 4
    progress.update(7, "loss=0.5", force=True)
    progress.close()
    text = stream.getvalue()
    assert progress.bar is not None and progress.bar.n == 7
    redraws = text.split("\r")
    assert len(redraws) >= 3 and "7/10" in redraws[-1] and "loss=0.5" in redraws[-1] and "step" in redraws[-1]
    assert text.endswith("\n") and text.count("\n") == 1                    # one line, ended when closed


def test_elsewhere_one_plain_line_per_interval_and_one_at_the_end():
    stream = io.StringIO()
    progress = Progress("train", total=10, start=0, stream=stream, interval=30)
    for done in range(1, 10):
        progress.update(done, f"loss={1 / done:.2f}", force=True)
    assert stream.getvalue() == ""                                           # within the interval: nothing
    progress.t_last -= 31
    progress.update(10)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in stream.getvalue()
    assert lines[0].startswith("train 100% |") and "10/10" in lines[0] and lines[0].endswith("loss=0.11")


def test_disabled_progress_writes_nothing():
    for stream in (Terminal(), io.StringIO()):
        progress = Progress("train", total=3, start=0, enabled=False, stream=stream)
        progress.update(3, "loss=1", force=True)
        progress.close()
        assert stream.getvalue() == "" and progress.bar is None


def test_evaluate_names_the_stage_that_runs(monkeypatch):
    """On a terminal, while each stage runs the bar names it; the last redraw says done."""
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    seen = []

    def shown() -> str:
        return stderr.getvalue().split("\r")[-1]

    class Cache:
        def __init__(self, *args):
            pass

        def get(self, idx_N):
            return torch.zeros(len(idx_N), 1, dtype=torch.long)

    monkeypatch.setattr(evaluate, "evaluate_tokenizer", lambda *a: seen.append(("tokenizer", shown())) or {})
    monkeypatch.setattr(evaluate, "TokenCache", Cache)
    monkeypatch.setattr(evaluate, "evaluate_var", lambda *a: seen.append(("transformer", shown())) or {})

    class Dataset:
        labels = torch.zeros(4, dtype=torch.long)

        def __len__(self):
            return 4

    out = evaluate.evaluate_models(vqvae=None, var=object(), dataset=Dataset())
    assert set(out) == {"tokenizer", "var", "eval_seconds"}
    assert [stage for stage, _ in seen] == ["tokenizer", "transformer"]
    assert "0/2" in seen[0][1] and "tokenizer" in seen[0][1]
    assert "1/2" in seen[1][1] and "transformer" in seen[1][1]
    assert "2/2" in shown() and "done" in shown() and stderr.getvalue().endswith("\n")
