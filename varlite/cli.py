"""The ``python -m varlite`` command line: download official weights or CIFAR-10, check parity, train, generate,
export a step-through (``figure``), inspect, start the walkthrough (``app``), copy the lessons (``lessons``).
``generate`` and ``figure`` are registered by ``generate_cli``, the training and model-file commands by
``train/cli.py``.

A mistake a user can make (a wrong path, name, dataset folder or file) prints one line ``error: <what, why, what to
do>`` on stderr and exits with code 2; ``--debug`` shows the full traceback instead. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import course
from . import generate_cli
from .builtin import BuiltinError
from .command import OneLineParser, add_debug_option, number_in, run_command
from .data import DatasetError, download_cifar10
from .data.cifar10 import OFFICIAL_URL as CIFAR10_URL
from .download import DownloadError, varlite_home
from .pretrained import OFFICIAL_FILES, CheckpointError, download_official, official_path
from .train import cli as train_cli

# What a user can cause; ValueError also covers CheckpointError (every checkpoint loader's), varlite.parity's
# ReferenceSetError and argument checks; OSError a path that is missing, a file where a folder is expected, a full
# disk. A traceback of these would only hide the message at its end.
USER_ERRORS = (OSError, ValueError, DatasetError, BuiltinError, DownloadError)


def cmd_download(args) -> int:
    """Fetch official checkpoints (a VAR depth brings the VQVAE it needs along) or the CIFAR-10 tarball."""
    names = []
    for name in args.names:
        if name == "cifar10":
            continue
        if name not in OFFICIAL_FILES:
            print(f"error: unknown name {name!r}; choose from {', '.join(OFFICIAL_FILES)}, cifar10", file=sys.stderr)
            return 2
        names += ([] if name == "vae" or args.no_vae or "vae" in names else ["vae"]) + [name]
    for name in dict.fromkeys(names):
        entry = OFFICIAL_FILES[name]
        print(f"{entry.filename} (~{entry.approx_mb} MB) -> {official_path(name, args.cache_dir)}", file=sys.stderr)
        try:
            path = download_official(name, args.cache_dir, endpoint=args.endpoint, progress=not args.quiet)
        except (DownloadError, CheckpointError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"ok: {path} (layout verified)")
    if "cifar10" in args.names:
        root = Path(args.cache_dir) / "cifar10" if args.cache_dir else None
        try:
            path = download_cifar10(root, url=args.cifar_url, progress=not args.quiet)
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"ok: {path} (md5 verified)")
    return 0


def cmd_info(args) -> int:
    """Where the cache is and which official files are in it."""
    from .core.configs import PRESETS
    print(f"files: {args.cache_dir or f'{varlite_home()} (VARLITE_HOME), then the Hugging Face cache'}")
    for name, entry in OFFICIAL_FILES.items():
        path = official_path(name, args.cache_dir)
        print(f"  {name:<4} {entry.filename:<24} {'present' if path.exists() else 'not downloaded'}")
    print(f"presets: {', '.join(PRESETS)}")
    return 0


def cmd_parity(args) -> int:
    from .parity import run_parity
    return run_parity(args.ref_dir, args.threads)


# ------------------------------------------------------------------------------------------------ the course
def cmd_app(args) -> int:
    """Start the walkthrough (Generate, Encode, Edit, Cost, Models) in Streamlit, from the files installed with
    varlite or from this git checkout; a browser tab opens unless --server.headless true. Every other argument goes
    to `streamlit run`, e.g. --server.port 8501 --server.address 0.0.0.0 for a class (see varlite.course)."""
    return course.start_app(args.streamlit_args)


def cmd_lessons(args) -> int:
    """Copy the lesson notebooks, their README and the data they read (lesson 12's logs) into DIR, where they run
    as they are: `jupyter lab DIR`. Files already in DIR are kept, never overwritten."""
    copied, kept = course.copy_lessons(args.dir)
    notebooks = sum(path.suffix == ".ipynb" for path in copied)
    print(f"copied {len(copied)} files ({notebooks} notebooks) to {args.dir}"
          + (f"; left {len(kept)} already there as they were (delete them for a fresh copy)" if kept else "")
          + f"; open them with: jupyter lab {args.dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m varlite", description="varlite: a readable VAR.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="download official checkpoints (vae, d16 ... d36) or the CIFAR-10 dataset")
    p.add_argument("names", nargs="+", metavar="NAME", help="vae, d16, d20, d24, d30, d36 or cifar10")
    p.add_argument("--cache-dir", default=None,
                   help="put the files in this folder (default: the Hugging Face cache, $HF_HOME/hub; copies "
                        "already in $VARLITE_HOME are used)")
    p.add_argument("--endpoint", default=None,
                   help="a Hugging Face mirror, e.g. https://hf-mirror.com (default: $HF_ENDPOINT, else "
                        "https://huggingface.co)")
    p.add_argument("--cifar-url", default=CIFAR10_URL,
                   help="where to fetch the official CIFAR-10 tarball (its official md5 is checked)")
    p.add_argument("--no-vae", action="store_true", help="do not also fetch the VQVAE with a VAR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("info", help="show the cache and the available presets")
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("parity", help="check varlite against an official reference set (see varlite.parity)")
    p.add_argument("ref_dir", help="a reference set folder (config.json, cases.npz, optional vae.pth/var.pth)")
    p.add_argument("--threads", type=number_in(1, 1024, int), default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_parity)

    generate_cli.add_subcommands(sub)    # generate, figure

    p = sub.add_parser("app", help="start the walkthrough in Streamlit; other arguments go to `streamlit run`, e.g. "
                                   "--server.port 8501 --server.headless true", description=cmd_app.__doc__,
                       allow_abbrev=False)
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("lessons", help="copy the lesson notebooks and the data they read into a folder",
                       description=cmd_lessons.__doc__)
    p.add_argument("dir", help="the folder to copy them into (made if missing; files already there are kept)")
    p.set_defaults(func=cmd_lessons)

    train_cli.add_subcommands(sub)    # train-tokenizer, train-var, train-classifier, evaluate, export-builtin,
                                      # export-run
    add_debug_option(parser, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":      # only `app` hands arguments it does not know on (to streamlit run)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.streamlit_args = extra
    return run_command(args, USER_ERRORS)
