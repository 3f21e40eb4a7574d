"""The ``python -m varlite`` command line: download official weights or CIFAR-10, check parity, train, inspect.

A mistake a user can make (a wrong path, name, dataset folder or file) prints one line ``error: <what, why, what to
do>`` on stderr and exits with code 2; ``--debug`` shows the full traceback instead. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .builtin import BuiltinError
from .data import DatasetError, download_cifar10
from .data.cifar10 import OFFICIAL_URL as CIFAR10_URL
from .download import DownloadError, varlite_home
from .train import cli as train_cli
from .train.checkpoint import CheckpointError as TrainCheckpointError
from .pretrained import HF_BASE_URL, OFFICIAL_FILES, CheckpointError, download_official, official_path

# What a user can cause; ValueError also covers varlite.pretrained's CheckpointError, varlite.parity's
# ReferenceSetError and argument checks. A traceback of these would only hide the message at its end.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, DatasetError,
               BuiltinError, TrainCheckpointError, DownloadError)
EXIT_USER_ERROR = 2


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
            path = download_official(name, args.cache_dir, base_url=args.base_url, progress=not args.quiet)
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
    from .configs import PRESETS
    print(f"cache: {args.cache_dir or varlite_home()}  (set VARLITE_HOME to move it)")
    for name, entry in OFFICIAL_FILES.items():
        path = official_path(name, args.cache_dir)
        print(f"  {name:<4} {entry.filename:<24} {'present' if path.exists() else 'not downloaded'}")
    print(f"presets: {', '.join(PRESETS)}")
    return 0


def cmd_parity(args) -> int:
    from .parity import main as parity_main
    return parity_main([args.ref_dir] + (["--threads", str(args.threads)] if args.threads else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m varlite", description="varlite: a readable VAR.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="download official checkpoints (vae, d16 ... d36) or the CIFAR-10 dataset")
    p.add_argument("names", nargs="+", metavar="NAME", help="vae, d16, d20, d24, d30, d36 or cifar10")
    p.add_argument("--cache-dir", default=None, help="default: $VARLITE_HOME or ~/.cache/varlite")
    p.add_argument("--base-url", default=HF_BASE_URL, help="mirror to download from (default: Hugging Face)")
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
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_parity)

    train_cli.add_subcommands(sub)    # train-tokenizer, train-var, train-classifier, evaluate, export-builtin
    add_debug_option(parser, sub)
    return parser


def add_debug_option(parser: argparse.ArgumentParser, subparsers) -> None:
    """``--debug`` before or after the command name (after it, only when given: the top level's default stays)."""
    text = "show the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=text)
    for sub in subparsers.choices.values():
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=text)


def error_line(err: BaseException) -> str:
    """The one line printed for a user error: the message on one line (an OSError without one: path and reason)."""
    if isinstance(err, OSError) and err.filename is not None and str(err).startswith("[Errno"):
        return f"{err.filename}: {err.strerror}; check the path"
    return " ".join(str(err).split()) or type(err).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen command; a user error becomes one line on stderr and exit code 2 (unless ``--debug``)."""
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))
