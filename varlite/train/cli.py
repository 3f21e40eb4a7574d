"""Command line for training and evaluation: the ``python -m varlite <command>`` subcommands registered here.

Commands: train-tokenizer, train-var, train-classifier, evaluate, export-builtin, export-run, export-judge. Every field of a training
config is an option of the same name (``batch_size`` -> ``--batch-size``), whose ``--help`` line is ``OPTION_HELP``'s
text for that field: what it does and the values it takes (the names of presets, datasets, built-in models and
classifier architectures are read from where they are defined, so the help lists what the code accepts). Data
parallel: start the same command with ``torchrun --nproc_per_node N -m varlite ...``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

# One help line per field of a training config (LoopConfig and the three trainers' configs), keyed by field name.
# {presets}, {datasets}, {builtins} and {archs} are filled in by ``allowed_values``.
OPTION_HELP = {
    "run_dir": "folder of the run: checkpoint.pt, config.json, metrics.jsonl and sample grids go here (made if "
               "missing); rerun the same command to resume",
    "steps": "optimizer steps in all, an integer >= 1 (may be raised when resuming: the cosine schedule follows)",
    "batch_size": "images per step over all processes, an integer >= 1 (divisible by the number of torchrun "
                  "processes)",
    "lr": "peak learning rate, reached after the warm-up, a number > 0",
    "weight_decay": "AdamW weight decay of the weight matrices (not of biases and norms), a number >= 0",
    "warmup_steps": "steps of linear warm-up from 0 to --lr, an integer >= 0",
    "min_lr_ratio": "after the warm-up, a cosine decays the learning rate from --lr to --lr times this, a number "
                    "in [0, 1]",
    "grad_clip": "clip the global gradient norm to this, a number >= 0 (0 = no clipping)",
    "seed": "seed of the initial weights, the data order and the augmentations, an integer >= 0",
    "log_every": "write a training row (means over the last N steps) to metrics.jsonl every N steps, an integer >= 1",
    "eval_every": "measure the held-out metrics every N steps, an integer >= 0 (0 = only at the end)",
    "sample_every": "write a sample grid samples_<step>.png every N steps, an integer >= 0 (0 = only at the end; "
                    "train-classifier writes none)",
    "ckpt_every": "save checkpoint.pt every N steps, an integer >= 1 (also at the end, at --stop-at and on Ctrl-C)",
    "device": "where to train: auto (a GPU if there is one, else the CPU), cpu, cuda, cuda:N or mps",
    "threads": "torch CPU threads, an integer >= 0 (0 = torch's default)",
    "progress": "show a progress line (rate, ETA, loss) on stderr; --no-progress: none",
    "stop_at": "save and stop after this step, an integer >= 0 (0 = run to --steps); rerun the command to continue",
    "precision": "one of: {precisions} (bf16: the forward pass under bfloat16 autocast, the weights stay float32; "
                 "auto: bf16 where the device has bfloat16 matmul units (AMX, AVX-512-BF16, a CUDA GPU), else fp32)",
    "preset": "model sizes, one of: {presets} (train-var: its tokenizer's preset)",
    "dataset": "training images, one of: {datasets} (folder: your own images, in --data-root)",
    "data_root": "where the dataset is: for folder, one sub-folder of images per class (with train/ and test/ "
                 "inside when split); for cifar10, its folder or tarball (default: the varlite cache); shapes takes "
                 "none",
    "recon_loss": "reconstruction loss: mse or l1",
    "edge_loss_weight": "weight of the finite-difference edge loss added to the reconstruction loss, a number >= 0 "
                        "(0 = off)",
    "perceptual_weight": "weight of the perceptual term, an LPIPS-style distance between the features of the "
                         "reconstruction and of the image in the shipped CIFAR-10 judge (builtin:cifar10), a number "
                         ">= 0 (0 = off)",
    "gan_weight": "weight of the adversarial term: a patch discriminator trained beside the tokenizer (hinge loss), "
                  "its generator loss scaled by VQGAN's adaptive weight, a number >= 0 (0 = off; one process only, "
                  "not under torchrun)",
    "disc_start": "the step from which the adversarial term is on and the discriminator trains, an integer >= 0 "
                  "(with --gan-weight)",
    "disc_lr": "the discriminator's learning rate (AdamW, betas 0.5 and 0.9, constant), a number > 0 (with "
               "--gan-weight)",
    "dead_after": "a code not chosen for this many steps is dead and is re-initialised from the batch, an integer",
    "restart_every": "look for dead codes every N steps, an integer >= 0 (0 = never)",
    "hflip": "train on left-right flipped images too (train-var: the tokens of every image and of its flip); not "
             "for shapes, whose classes have a side",
    "eval_images": "held-out images each evaluation uses, an integer >= 0 (0 = the whole test split)",
    "tokenizer": "the frozen tokenizer (needed): a train-tokenizer run folder, its checkpoint.pt, or {builtins}",
    "label_smoothing": "label smoothing of the cross-entropy loss, a number in [0, 1]",
    "sample_cfg": "classifier-free guidance of the sample grids and of the --judge measurement, a number",
    "samples_per_class": "samples per class in each sample grid, an integer >= 1",
    "encode_first": "encode every training image (and its flip) before step 0, instead of lazily during the first "
                    "epoch",
    "judge": "a train-classifier run folder (or its checkpoint.pt): each evaluation also measures the "
             "class-consistency of samples; empty = off",
    "judge_per_class": "samples per class for the --judge measurement (guidance --sample-cfg, seed 0), an integer",
    "init_from": "start from the weights of a train-var run folder, its checkpoint.pt, or {builtins} (same preset "
                 "and tokenizer); empty = from scratch",
    "image_size": "side in pixels of the classifier's square images (the dataset's must be this size)",
    "num_classes": "classes the classifier tells apart (the dataset's labels must be below it)",
    "arch": "classifier network, one of: {archs}",
    "width": "channels of the classifier's first convolution (later layers are multiples), an integer",
    "translate": "random shifts of up to this many pixels (reflect-padded), an integer >= 0 (0 = off)",
}


def allowed_values() -> dict[str, str]:
    """The names the help lines list, read from where they are defined: the presets, the dataset names, the
    shipped models (as ``builtin:<name>``), the classifier architectures and the precisions."""
    from varlite.builtin import list_builtin
    from varlite.core.configs import PRESETS
    from varlite.data import DATASET_NAMES

    from .classifier import ARCHS
    from .loop import PRECISIONS
    return {"precisions": ", ".join(PRECISIONS), "presets": ", ".join(sorted(PRESETS)), "datasets": ", ".join(DATASET_NAMES),
            "builtins": "|".join(f"builtin:{name}" for name in list_builtin()),
            "archs": ", ".join(f"{name} ({cls.__name__})" for name, cls in ARCHS.items())}


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
    """One option per dataclass field, typed by its default, with its ``OPTION_HELP`` line and its default (an
    empty or None default is not shown: the line says what leaving the option out means)."""
    hints = typing.get_type_hints(config_cls)
    values = allowed_values()
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        text = OPTION_HELP[f.name].format(**values)
        if f.default not in (dataclasses.MISSING, None, ""):
            text += " (default: %(default)s)"
        if f.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=text)
        elif hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        else:
            kind = hints[f.name]
            if typing.get_origin(kind) in (typing.Union, types.UnionType):     # "str | None": a path or nothing
                kind = str
            parser.add_argument(flag, type=kind, default=f.default, help=text)


def _config_from(args: argparse.Namespace, config_cls):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _train(trainer_cls, config_cls):
    def run(args):
        from .distributed import teardown_distributed
        try:
            result = trainer_cls(_config_from(args, config_cls)).run()
        finally:
            teardown_distributed()
        if result.metrics:               # finished, or Ctrl-C: the held-out metrics of the weights saved
            print(json.dumps(result.metrics, indent=1))
        return 130 if result.interrupted else 0
    return run


def add_subcommands(subparsers) -> None:
    """Register train-tokenizer, train-var, train-classifier, evaluate, export-builtin, export-run and export-judge on an argparse
    subparsers object (``python -m varlite`` calls this)."""
    from .classifier import ClassifierTrainConfig, ClassifierTrainer
    from .tokenizer import TokenizerTrainConfig, TokenizerTrainer
    from .transformer import VarTrainConfig, VarTrainer
    from .classifier import add_export_judge_options, cmd_export_judge
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
    p = subparsers.add_parser("export-builtin", help="write a VAR run as a shipped varlite/weights/<name>.safetensors")
    add_export_options(p)
    p.set_defaults(func=cmd_export_builtin)
    p = subparsers.add_parser("export-run", help="write a train-var run's weights as one small .safetensors file "
                                                 "(for the walkthrough's upload)", description=cmd_export_run.__doc__)
    add_export_run_options(p)
    p.set_defaults(func=cmd_export_run)
    p = subparsers.add_parser("export-judge", help="ship a train-classifier run as the judge that --classifier "
                                                   "builtin:<dataset> loads", description=cmd_export_judge.__doc__)
    add_export_judge_options(p)
    p.set_defaults(func=cmd_export_judge)

