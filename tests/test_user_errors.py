"""What a user (or a crafted file) can cause is refused with a clear message and bounded work, never a traceback.

The command line's promise: a mistake is one line on stderr and exit code 2. Each case is a real command that used to
end in a traceback (or ran unbounded); the message must say what was wrong and what is allowed. Files: one reader
for every loader, which refuses what could take more memory than the file's size.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varlite.cli import main as cli_main

REF_DIR = Path(__file__).resolve().parents[1] / "varlite" / "reference" / "upstream_tiny"


def one_line_error(argv: list[str], capsys) -> str:
    """Run the command line in this process; return its one stderr line (exit code 2 checked)."""
    with pytest.raises(SystemExit) as info:
        sys.exit(cli_main(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["generate", "--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
    (["generate", "--cfg", "inf"], "argument --cfg: inf is outside [0, 100]"),
    (["generate", "--cfg", "1e39"], "argument --cfg: 1e39 is outside [0, 100]"),
    (["generate", "--top-p", "nan"], "argument --top-p: nan is outside [0, 1]"),
    (["generate", "--seed", str(2 ** 70)], f"argument --seed: {2 ** 70} is outside [0, 9223372036854775807]"),
    (["generate", "--seed", "12x"], "argument --seed: '12x' is not an integer"),
    (["generate", "--n", "100000"], "argument --n: 100000 is outside [1, 256]"),
    (["figure", "--frame-ms", "0"], "argument --frame-ms: 0 is outside [20, 60000]"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_arguments_are_refused_by_the_parser_in_one_line(argv, says, capsys):
    assert says in one_line_error(argv, capsys)


def test_a_batch_beyond_the_limit_is_refused_before_sampling(tmp_path, capsys):
    err = one_line_error(["generate", "--n", "200", "--out", str(tmp_path / "g.png")], capsys)
    assert "10 classes x --n 200 = 2000 images in one batch; at most 1024" in err
    assert not (tmp_path / "g.png").exists()


def test_an_unknown_preset_names_the_presets(tmp_path, capsys):
    err = one_line_error(["train-var", "--preset", "nope", "--run-dir", str(tmp_path / "run"), "--tokenizer",
                          str(tmp_path / "tok")], capsys)
    assert "unknown preset 'nope'; choose one of" in err and "shapes" in err


def test_varlite_home_naming_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("VARLITE_HOME", str(home))
    assert str(home) in one_line_error(["info"], capsys)


def test_a_parity_config_missing_keys_says_which(tmp_path, capsys):
    ref = tmp_path / "set"
    shutil.copytree(REF_DIR, ref)
    config = json.loads((ref / "config.json").read_text())
    del config["models"]
    (ref / "config.json").write_text(json.dumps(config))
    assert "config.json lacks models" in one_line_error(["parity", str(ref)], capsys)
    config["models"] = {}
    (ref / "config.json").write_text(json.dumps(config))
    assert "no state_dict layout for vae" in one_line_error(["parity", str(ref)], capsys)
    from varlite.parity import ReferenceSetError, configs_from_reference
    del config["var_constructor_args"]["depth"]
    with pytest.raises(ReferenceSetError, match="lacks the constructor argument 'depth'"):
        configs_from_reference(config)


def test_a_huge_image_in_an_image_folder_is_refused_from_its_header(tmp_path):
    """A 200-megapixel PNG (a small file: one colour) is refused before decoding, as a dataset error."""
    from varlite.data import CorruptDatasetError
    from varlite.data.folder import load_square_rgb
    path = tmp_path / "big.png"
    Image.new("1", (20_000, 10_000)).save(path)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(CorruptDatasetError, match=r"big.png has more than the 40 megapixels an image folder accepts"):
        load_square_rgb(path, 32)
    medium = tmp_path / "medium.png"           # under PIL's own limit, over ours: refused from the header
    Image.new("1", (8_000, 6_000)).save(medium)
    with pytest.raises(CorruptDatasetError, match=r"medium.png is 8000x6000 pixels, more than the 40 megapixels"):
        load_square_rgb(medium, 32)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(small)
    assert load_square_rgb(small, 32).shape == (32, 32, 3)


def test_the_installed_entry_point_prints_one_line_for_a_parser_error():
    done = subprocess.run([sys.executable, "-m", "varlite", "generate", "--cfg", "inf"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def test_a_zip_bomb_is_refused_by_the_one_reader_before_anything_is_inflated(tmp_path):
    """A torch file whose members are deflated (64 MiB of zeros in a file of ~70 KB) is refused by read_torch_file,
    which every loader uses: a training checkpoint, an official / uploaded state dict."""
    import io
    import zipfile

    import torch

    from varlite import pretrained
    from varlite.safe_io import CorruptCheckpointError
    from varlite.train.checkpoint import load_checkpoint
    buffer = io.BytesIO()
    torch.save({"format": "varlite-train", "version": 1, "w": torch.zeros(16 * 2 ** 20)}, buffer)
    bomb = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as plain, \
            zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as deflated:
        for member in plain.infolist():
            deflated.writestr(member.filename, plain.read(member))
    assert bomb.stat().st_size < 1_000_000
    for load in (load_checkpoint, pretrained.load_state_dict):
        with pytest.raises(CorruptCheckpointError, match="compressed members .* refused before inflating anything"):
            load(bomb)


def test_an_error_line_quoting_a_huge_name_is_cut():
    """A crafted file can carry a 100 KB key name; the one line that reports it stays short."""
    from varlite.command import MAX_ERROR_CHARS, error_line
    line = error_line(ValueError("unexpected key " + "k" * 100_000 + " in the file"))
    assert len(line) <= MAX_ERROR_CHARS and line.startswith("unexpected key kkk") and line.endswith("(message cut)")
    assert error_line(ValueError("short\n message")) == "short message"


@pytest.mark.parametrize("option, value, says", [
    ("--batch-size", "0", "--batch-size must be an integer >= 1; got 0"),
    ("--ckpt-every", "0", "--ckpt-every must be an integer >= 1; got 0"),
    ("--log-every", "0", "--log-every must be an integer >= 1; got 0"),
    ("--steps", "-5", "--steps must be an integer >= 1; got -5"),
    ("--lr", "nan", "--lr must be a finite number > 0; got nan"),
    ("--min-lr-ratio", "2", "--min-lr-ratio must be a finite number in [0, 1]; got 2.0"),
])
def test_training_options_that_cannot_run_are_refused_before_anything_starts(option, value, says, tmp_path, capsys):
    run = tmp_path / "run"
    assert says in one_line_error(["train-tokenizer", "--run-dir", str(run), option, value], capsys)
    assert not run.exists()


def test_a_run_dir_naming_a_file_is_one_line(tmp_path, capsys):
    run = tmp_path / "a-file"
    run.write_text("x")
    assert "is a file; give a folder" in one_line_error(["train-tokenizer", "--run-dir", str(run)], capsys)


def test_a_damaged_training_checkpoint_is_a_checkpoint_error_that_quotes_nothing_from_the_file(tmp_path):
    """Missing entries are named; the file's own version / kind strings are not echoed (they could be anything)."""
    import torch

    from varlite.safe_io import CheckpointError
    from varlite.train.checkpoint import FORMAT, VERSION, load_checkpoint
    path = tmp_path / "checkpoint.pt"
    cases = [({"version": "x" * 100_000}, "has a checkpoint version this varlite does not read"),
             ({"version": VERSION, "kind": "<b>y</b>" * 1000}, "is an unknown kind of checkpoint, but a 'var'"),
             ({"version": VERSION, "kind": "var", "model": {}, "step": 3}, "its 'configs' entry is missing"),
             ({"version": VERSION, "kind": "var", "configs": {}, "model": [], "step": 3}, "its 'model' entry"),
             ({"version": VERSION, "kind": "var", "configs": {}, "model": {}, "step": "3"}, "its 'step' entry")]
    for fields, says in cases:
        torch.save({"format": FORMAT, **fields}, path)
        with pytest.raises(CheckpointError, match=says) as info:
            load_checkpoint(path, "var")
        assert len(str(info.value)) < 300
