"""The plumbing of the ``python -m varlite`` command line, below every command: one line and exit code 2 for a
user's mistake, in the arguments (``OneLineParser``, argument types that check ranges) or in what a command is asked
to do (``run_command``); ``--debug`` shows the traceback instead. Imports nothing else of varlite.
"""
from __future__ import annotations

import argparse
import re
import sys

EXIT_USER_ERROR = 2
MAX_ERROR_CHARS = 600       # an error line longer than this is cut


class OneLineParser(argparse.ArgumentParser):
    """argparse with the command line's promise: a mistake in the arguments is one line on stderr, exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def number_in(low: float, high: float, kind=float):
    """An argparse ``type``: a finite number of ``kind`` in [low, high], or an error saying the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not low <= value <= high:        # also refuses nan and inf
            bounds = f"[{low}, {high}]" if kind is int else f"[{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"{text} is outside {bounds}")
        return value
    return parse


def device_name(text: str) -> str:
    """An argparse ``type``: auto, cpu, mps, cuda or cuda:N."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return text


def add_debug_option(parser: argparse.ArgumentParser, subparsers) -> None:
    """``--debug`` before or after the command name (after it, only when given: the top level's default stays)."""
    text = "show the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=text)
    for sub in subparsers.choices.values():
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=text)


def error_line(err: BaseException) -> str:
    """The one line printed for a user error: the message on one line (an OSError without one: path and reason),
    at most ``MAX_ERROR_CHARS`` long (a message that quotes a crafted file's names must not flood a terminal)."""
    if isinstance(err, OSError) and err.filename is not None and str(err).startswith("[Errno"):
        line = f"{err.filename}: {err.strerror}; check the path"
    else:
        line = " ".join(str(err).split()) or type(err).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS - 20] + " ... (message cut)"


def run_command(args: argparse.Namespace, user_errors: tuple[type[BaseException], ...]) -> int:
    """Run the chosen command (``args.func``); an exception of ``user_errors`` becomes one line on stderr and exit
    code 2 (unless ``--debug``), anything else keeps its traceback (a bug)."""
    try:
        return args.func(args)
    except user_errors as err:
        if args.debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
