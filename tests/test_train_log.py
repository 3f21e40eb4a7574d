"""The training log (``metrics.jsonl``, the one metrics file of a run) survives interruptions exactly: the open
logging window is part of the checkpoint, and a torn last line is dropped with a warning."""
from __future__ import annotations

import json

import pytest

from tests.test_train import InterruptAt, micro_preset_one_thread  # noqa: F401 (autouse fixture: micro preset, one thread)
from varlite.train.checkpoint import load_checkpoint
from varlite.train.metric_log import MetricLog, read_metrics
from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer


def trainer(run_dir, **kw) -> TokenizerTrainer:
    """A micro tokenizer on the Shapes data, logging every 5 steps (the case of the issue)."""
    config = dict(run_dir=str(run_dir), preset="test-micro", dataset="shapes", steps=20, batch_size=8, log_every=5,
                  eval_every=0, sample_every=0, ckpt_every=100, eval_images=8, progress=False, warmup_steps=2)
    return TokenizerTrainer(TokenizerTrainConfig(**{**config, **kw}))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    assert trainer(run).run().finished
    return run


def test_sigint_at_step_19_then_rerun_logs_the_same_step_20_row(straight_run, tmp_path):
    first = trainer(tmp_path)
    InterruptAt(first, 18)                     # 0-based 18 = the 19th step: 4 steps into the window 16..20
    result = first.run()
    assert (result.step, result.interrupted) == (19, True)
    window = load_checkpoint(tmp_path / "checkpoint.pt")["log_window"]
    assert len(window) == 1 and window[0]["count"] == 4 and {"loss", "grad_norm"} <= set(window[0]["sums"])
    assert [r["step"] for r in read_metrics(tmp_path)] == [5, 10, 15]
    assert trainer(tmp_path).run().finished
    resumed, straight = read_metrics(tmp_path, "train"), read_metrics(straight_run, "train")
    assert [r["step"] for r in straight] == [5, 10, 15, 20]
    assert resumed[-1] == straight[-1]              # the step-20 row: means over steps 16..20, 4 before the stop
    assert resumed == straight
    assert (tmp_path / "metrics.jsonl").read_text() == (straight_run / "metrics.jsonl").read_text()


def test_a_torn_last_line_is_dropped_with_a_warning(straight_run, tmp_path):
    assert not trainer(tmp_path, stop_at=10).run().finished
    with open(tmp_path / "metrics.jsonl", "a") as f:     # a write cut short by a power loss
        f.write('{"split": "train", "step": 1')
    with pytest.warns(UserWarning, match="torn last line") as caught:
        assert trainer(tmp_path).run().finished
    assert [str(w.message).split(":")[0] for w in caught if "torn" in str(w.message)] == [
        str(tmp_path / "metrics.jsonl")]
    assert (tmp_path / "metrics.jsonl").read_text() == (straight_run / "metrics.jsonl").read_text()
    assert not list(tmp_path.glob("*.csv"))             # one metrics file only


def test_a_damaged_middle_line_is_a_clear_error(tmp_path):
    log = MetricLog(tmp_path)
    for step in (1, 2, 3):
        log.write("train", step, {"loss": 1.0 / step})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 of 3 is not JSON: the file is damaged in the middle"):
        MetricLog(tmp_path).keep_until(3)


def test_the_window_is_a_running_sum_that_restarts_after_each_row(tmp_path):
    log = MetricLog(tmp_path, enabled=False)
    log.add({"loss": 1.0, "acc": 0.5})
    log.add({"loss": 3.0, "acc": 0.25})
    saved = log.window_state()
    assert saved == {"sums": {"loss": 4.0, "acc": 0.75}, "count": 2}
    other = MetricLog(tmp_path, enabled=False)
    other.load_window(saved)
    assert other.take_window() == log.take_window() == {"acc": 0.375, "loss": 2.0}
    assert log.window_state() == {"sums": {}, "count": 0}
    log.load_window(None)                          # a checkpoint from before windows were saved
    assert log.window_state() == {"sums": {}, "count": 0}
    json.dumps(saved)                              # plain types: loadable with weights_only=True
