"""Command line for training and evaluation: the ``python -m varlite <command>`` subcommands registered here.

Commands: train-tokenizer, train-var, train-classifier, evaluate, export-builtin, export-run. Every field of a training
config is an option of the same name (``batch_size`` -> ``--batch-size``). Data parallel: start the same
command with ``torchrun --nproc_per_node N -m varlite ...``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

RUN_FIELDS_HELP = {"run_dir": "folder for checkpoint.pt, metrics and sample grids (rerun the command to resume)"}


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
    """One option per dataclass field, typed by its default."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        if f.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=RUN_FIELDS_HELP.get(f.name))
        elif hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = hints[f.name]
            if typing.get_origin(kind) in (typing.Union, types.UnionType):     # "str | None": a path or nothing
                kind = str
            parser.add_argument(flag, type=kind, default=f.default, help=f"(default: {f.default})")


def _config_from(args: argparse.Namespace, config_cls):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _train(trainer_cls, config_cls):
    def run(args):
        result = trainer_cls(_config_from(args, config_cls)).run()
        if result.metrics:               # finished, or Ctrl-C: the held-out metrics of the weights saved
            print(json.dumps(result.metrics, indent=1))
        return 130 if result.interrupted else 0
    return run


def add_subcommands(subparsers) -> None:
    """Register train-tokenizer, train-var, train-classifier, evaluate, export-builtin and export-run on an argparse
    subparsers object (``python -m varlite`` calls this)."""
    from .classifier import ClassifierTrainConfig, ClassifierTrainer
    from .tokenizer import TokenizerTrainConfig, TokenizerTrainer
    from .transformer import VarTrainConfig, VarTrainer
    from .evaluate import (add_evaluate_options, add_export_options, add_export_run_options, cmd_evaluate,
                           cmd_export_builtin, cmd_export_run)

    for name, config_cls, trainer_cls, text in [
            ("train-tokenizer", TokenizerTrainConfig, TokenizerTrainer, "train the multi-scale VQVAE"),
            ("train-var", VarTrainConfig, VarTrainer, "train the VAR transformer on a frozen tokenizer's tokens"),
            ("train-classifier", ClassifierTrainConfig, ClassifierTrainer,
             "train the small CNN that judges class-consistency of samples")]:
        p = subparsers.add_parser(name, help=text, description=text)
        _add_config_options(p, config_cls)
        p.set_defaults(func=_train(trainer_cls, config_cls))
    p = subparsers.add_parser("evaluate", help="metrics of a trained tokenizer / VAR / built-in model")
    add_evaluate_options(p)
    p.set_defaults(func=cmd_evaluate)
    p = subparsers.add_parser("export-builtin", help="write a VAR run as a shipped varlite/weights/<name>.pth")
    add_export_options(p)
    p.set_defaults(func=cmd_export_builtin)
    p = subparsers.add_parser("export-run", help="write a train-var run's weights as one small .safetensors file "
                                                 "(for the walkthrough's upload)", description=cmd_export_run.__doc__)
    add_export_run_options(p)
    p.set_defaults(func=cmd_export_run)

