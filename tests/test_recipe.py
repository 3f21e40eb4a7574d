"""The CIFAR-10 recipe's machinery: the shipped judge, ``--precision auto``, and the whole recipe as a dry run
(the refusal of other precisions is tested with the trainers' options, tests/test_cifar_recipe.py).

The dry run (``DRY_RUN=1 bash recipes/cifar10.sh all``) runs every stage of the recipe with a few steps on the
built-in Shapes data (no download): tokenizer, encode, transformer, evaluate with the shipped judge, each stage timed
into timings.txt. It is the test of the GPU path too: ``DEVICE`` is passed to every stage as ``--device``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from varlite import device as device_module
from varlite.device import resolve_precision
from varlite.safe_io import CheckpointError
from varlite.train import classifier as classifier_module
from varlite.train.classifier import build_classifier, load_classifier, save_judge

ROOT = Path(__file__).resolve().parents[1]


def test_a_saved_judge_loads_as_builtin_with_the_same_outputs(tmp_path, monkeypatch):
    torch.manual_seed(0)
    judge = build_classifier("deep", 10, 8).eval()
    config = {"arch": "deep", "num_classes": 10, "width": 8, "dataset": "cifar10"}
    save_judge(tmp_path / "cifar10.safetensors", judge, config, test_acc=0.8123)
    monkeypatch.setattr(classifier_module, "JUDGES_DIR", tmp_path)
    loaded, meta = load_classifier("builtin:cifar10")
    img = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded(img), judge(img))
    assert meta == {**config, "test_acc": 0.8123}
    with pytest.raises(CheckpointError, match=r"no shipped judge named 'mnist'; shipped: cifar10"):
        load_classifier("builtin:mnist")


def test_the_shipped_cifar10_judge_is_a_deep_cnn_that_was_measured():
    judge, meta = load_classifier("builtin:cifar10")
    assert meta["arch"] == "deep" and meta["dataset"] == "cifar10" and meta["num_classes"] == 10
    assert 0.7 < meta["test_acc"] < 1.0
    assert judge(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("flags, want", [({"avx2", "fma"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"),
                                         ({"avx512f", "amx_bf16", "amx_tile"}, "bf16"), (set(), "fp32")])
def test_precision_auto_uses_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, flags, want):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
    assert resolve_precision("auto", torch.device("cpu")) == want
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_the_recipe_runs_end_to_end_as_a_dry_run(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "DRY_RUN": "1", "DATASET_NAME": "shapes", "RUNS": str(runs), "PY": sys.executable,
           "DEVICE": "cpu", "THREADS": "1", "VARLITE_HOME": str(tmp_path / "home")}
    done = subprocess.run(["bash", str(ROOT / "recipes" / "cifar10.sh"), "all"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (runs / "timings.txt").read_text().splitlines()
    assert lines[0].startswith("# ") and "device cpu, precision auto, 1 threads" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["tokenizer", "encode", "long", "evaluate"]
    assert all(" wall " in line and " cpu " in line and "exit status" not in line for line in lines[1:])
    report = json.loads((runs / "eval.json").read_text())
    assert 0.0 <= report["class_consistency"]["class_consistency"] <= 1.0
    assert report["class_consistency"]["samples"] == 10            # DRY_RUN: one sample per class
    assert (runs / "var-fast" / "checkpoint.pt").is_file() and (runs / "samples.png").is_file()   # SCHEDULE=fast
    assert json.loads((runs / "var-fast" / "config.json").read_text())["train"]["preset"] == "cifar10-fast"


def test_the_recipe_refuses_an_unknown_schedule(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "recipes" / "cifar10.sh"), "all"], env={**os.environ, "SCHEDULE": "slow"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "SCHEDULE must be fast or shipped, got 'slow'" in done.stderr
