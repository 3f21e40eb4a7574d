"""The command line speaks plainly: a user's mistake is one line on stderr and exit code 2; --debug shows the
traceback instead (issue 11 §4, issue 14 item 9)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from varlite.cli import main as cli_main
from varlite.parity import ReferenceSetError


@pytest.fixture
def image_folders(tmp_path):
    """Two broken datasets: a class folder with no images, and a text file named x.png."""
    empty = tmp_path / "empty_class"
    (empty / "cats").mkdir(parents=True)
    (empty / "dogs").mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(empty / "cats" / "1.png")
    text = tmp_path / "text_png"
    (text / "cats").mkdir(parents=True)
    (text / "cats" / "x.png").write_text("I am a text file\n")
    return empty, text


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and lines[0].startswith("error: ")
    return lines[0]


def test_typical_mistakes_give_one_line_and_exit_code_2(tmp_path, image_folders, capsys):
    empty, text = image_folders
    run = str(tmp_path / "run")
    cases = [
        (["parity", "/nonexistent"],
         "error: reference set folder /nonexistent does not exist; pass a folder made by the reference generator"),
        (["parity", str(tmp_path)], f"error: {tmp_path} is not a reference set: it has no config.json"),
        (["evaluate", "--builtin", "nope"], "error: no built-in model named 'nope'"),
        (["train-var", "--run-dir", run, "--tokenizer", "/nonexistent"],
         "error: checkpoint /nonexistent does not exist; pass the path of a checkpoint written by varlite's trainer"),
        (["train-tokenizer", "--run-dir", run, "--dataset", "folder", "--data-root", str(empty)],
         f"error: class folder {empty / 'dogs'} holds no images (files ending in .png"),
        (["train-tokenizer", "--run-dir", run, "--dataset", "folder", "--data-root", str(text)],
         f"error: {text / 'cats' / 'x.png'} is not a readable image: its name ends in .png but the contents cannot be "
         f"decoded as one (UnidentifiedImageError); replace or remove it"),
        (["train-tokenizer", "--run-dir", run, "--dataset", "folder"],
         "error: the folder dataset needs the folder of your images (--data-root DIR on the command line"),
        (["train-tokenizer", "--run-dir", run, "--dataset", "imagenet"],
         "error: unknown dataset 'imagenet'; expected one of shapes, cifar10, folder"),
    ]
    for argv, start in cases:
        assert cli_main(argv) == 2, argv
        line = one_error_line(capsys)
        assert line.startswith(start), (argv, line)
    assert "root=" not in line.split("(")[0]        # the missing --data-root is named as the option, not root=


def test_debug_shows_the_traceback_before_or_after_the_command(capsys):
    for argv in (["--debug", "parity", "/nonexistent"], ["parity", "/nonexistent", "--debug"]):
        with pytest.raises(ReferenceSetError, match="does not exist"):
            cli_main(argv)


def test_the_real_entry_point_exits_2_without_a_traceback(tmp_path):
    for module_argv in (["varlite", "parity", "/nonexistent"], ["varlite", "evaluate", "--builtin", "nope"]):
        done = subprocess.run([sys.executable, "-m", *module_argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (module_argv, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    """Only user errors are shortened: a bug (here a KeyError inside a command) still raises."""
    import varlite.cli as cli

    def broken(args):
        raise KeyError("a bug")
    monkeypatch.setattr(cli, "cmd_info", broken)
    with pytest.raises(KeyError):
        cli_main(["info"])
