"""`python -m varlite train-* --help`: one line per option saying what it does and the values it takes, the names
read from where the code defines them."""
from __future__ import annotations

import dataclasses
import re

import pytest

from varlite import cli
from varlite.builtin import list_builtin
from varlite.core.configs import PRESETS
from varlite.data import DATASET_NAMES
from varlite.train import cli as train_cli
from varlite.train.classifier import ARCHS, ClassifierTrainConfig
from varlite.train.loop import PRECISIONS
from varlite.train.tokenizer import TokenizerTrainConfig
from varlite.train.transformer import VarTrainConfig

COMMANDS = {"train-tokenizer": TokenizerTrainConfig, "train-var": VarTrainConfig,
            "train-classifier": ClassifierTrainConfig}


def help_entries(command: str, capsys, monkeypatch) -> dict[str, str]:
    """The --help of ``command`` as {first flag: its help, on one line} (wide enough that argparse wraps nothing;
    an entry whose flags are long continues on the next line)."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    entries, flag = {}, None
    for line in capsys.readouterr().out.splitlines():
        start = re.match(r"  (--[\w-]+)(?: [A-Z_]+)?(?:, --[\w-]+)*(.*)", line)
        if start:
            flag = start.group(1)
            entries[flag] = start.group(2).strip()
        elif flag and line.startswith("      "):
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return entries


def test_every_field_of_every_training_config_has_a_help_line():
    """A new config field without a line in OPTION_HELP fails here; so does a line left for a removed field."""
    fields = {f.name for config in COMMANDS.values() for f in dataclasses.fields(config)}
    assert fields - set(train_cli.OPTION_HELP) == set()
    assert set(train_cli.OPTION_HELP) - fields == set()


@pytest.mark.parametrize("command", COMMANDS)
def test_each_option_of_the_help_says_what_it_does(command, capsys, monkeypatch):
    entries = help_entries(command, capsys, monkeypatch)
    for f in dataclasses.fields(COMMANDS[command]):
        text = entries["--" + f.name.replace("_", "-")]
        assert len(re.sub(r"\(default: [^)]*\)", "", text).strip()) > 20, (f.name, text)     # more than the default


def test_train_var_help_names_the_allowed_presets_datasets_and_builtin_models(capsys, monkeypatch):
    entries = help_entries("train-var", capsys, monkeypatch)
    assert all(re.search(rf"[ ,]{re.escape(name)}[,( ]", entries["--preset"]) for name in PRESETS), entries
    assert "one of: " + ", ".join(DATASET_NAMES) in entries["--dataset"]
    builtins = "|".join(f"builtin:{name}" for name in list_builtin())
    assert list_builtin() and builtins in entries["--tokenizer"] and builtins in entries["--init-from"]
    assert "one of: " + ", ".join(PRECISIONS) in entries["--precision"]


def test_train_classifier_help_names_the_architectures(capsys, monkeypatch):
    arch = help_entries("train-classifier", capsys, monkeypatch)["--arch"]
    assert all(f"{name} ({cls.__name__})" in arch for name, cls in ARCHS.items())


def test_every_precision_the_help_lists_is_accepted_and_others_refused(tmp_path):
    for value in PRECISIONS:
        assert TokenizerTrainConfig(run_dir=str(tmp_path), precision=value).precision == value
    with pytest.raises(ValueError, match="--precision must be fp32, bf16 or auto"):
        TokenizerTrainConfig(run_dir=str(tmp_path), precision="fp16")


@pytest.mark.parametrize("field, config", [("recon_loss", TokenizerTrainConfig)])
def test_the_values_a_help_line_lists_are_accepted(field, config, tmp_path):
    """recon_loss has no list of names in the code: the two the help names must be accepted."""
    values = re.search(r"(\w+) or (\w+)", train_cli.OPTION_HELP[field]).groups()
    for value in values:
        assert getattr(config(run_dir=str(tmp_path), **{field: value}), field) == value
    with pytest.raises(ValueError, match=field):
        config(run_dir=str(tmp_path), **{field: "neither"})
