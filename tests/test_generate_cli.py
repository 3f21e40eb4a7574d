"""``python -m varlite generate``: the grid equals the library's generation, names and numbers select classes,
--steps-out writes every scale, mistakes are one line (issue 11 §4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from varlite.builtin import load_builtin, sampling_defaults
from varlite.cli import main as cli_main
from varlite.data.shapes import CLASS_NAMES
from varlite.train.grid import save_grid
from varlite.viz import codebook_colors

SHAPES_SIDE, SHAPES_ZOOM, SHAPES_K = 32, 2, 7


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def generate(tmp_path, *argv, name="grid.png") -> np.ndarray:
    out = tmp_path / name
    assert cli_main(["generate", "--device", "cpu", "--out", str(out), *argv]) == 0
    return png(out)


@pytest.fixture(scope="module")
def shapes_models():
    return load_builtin("shapes")


def test_the_grid_is_the_library_generation_with_the_recommended_sampling(tmp_path, shapes_models, capsys):
    grid = generate(tmp_path, "--model", "shapes", "--class", "red disc", "--n", "2", "--seed", "3")
    expected_images = shapes_models[1].generate([0, 0], **sampling_defaults("shapes"), seed=3)
    expected = png(save_grid(expected_images, 2, tmp_path / "expected.png", scale=SHAPES_ZOOM))
    assert grid.shape == ((SHAPES_SIDE + 4) * SHAPES_ZOOM, (2 * SHAPES_SIDE + 6) * SHAPES_ZOOM, 3)
    assert np.array_equal(grid, expected)
    err = capsys.readouterr().err
    assert ("built-in shapes, classes 0 'red disc' (one row each, 2 images), cfg 1.5, top-k 20, top-p 0.0, "
            "more_smooth False, seed 3, cpu") in err


def test_one_row_lays_the_batch_out_as_the_official_demo(tmp_path, shapes_models, capsys):
    """The official demo samples classes (980, 980, 437, 437, 22, 22, 562, 562) and shows them in one row of 8."""
    grid = generate(tmp_path, "--class", "0", "1", "2", "3", "--n", "2", "--one-row", "--more-smooth", "--seed", "1")
    expected_images = shapes_models[1].generate([0, 0, 1, 1, 2, 2, 3, 3], **sampling_defaults("shapes"),
                                                more_smooth=True, seed=1)
    assert np.array_equal(grid, png(save_grid(expected_images, 8, tmp_path / "e.png", scale=SHAPES_ZOOM)))
    assert grid.shape[:2] == ((SHAPES_SIDE + 4) * SHAPES_ZOOM, (8 * SHAPES_SIDE + 18) * SHAPES_ZOOM)
    assert "(one row of 8), cfg 1.5, top-k 20, top-p 0.0, more_smooth True, seed 1" in capsys.readouterr().err


def test_classes_by_number_or_name_and_overrides(tmp_path, shapes_models, capsys):
    by_name = generate(tmp_path, "--class", "Yellow Ring", "teal frame", "--n", "1", "--cfg", "0", "--top-k", "1")
    by_number = generate(tmp_path, "--class", "3", "9", "--n", "1", "--cfg", "0", "--top-k", "1", name="b.png")
    assert np.array_equal(by_name, by_number)
    assert "classes 3 'yellow ring', 9 'teal frame' (one row each, 1 images), cfg 0.0, top-k 1," in capsys.readouterr().err
    expected = shapes_models[1].generate([3, 9], cfg=0.0, top_k=1, top_p=0.0, seed=0)
    assert np.array_equal(by_name, png(save_grid(expected, 1, tmp_path / "e.png", scale=SHAPES_ZOOM)))
    every_class = generate(tmp_path, "--n", "1", name="all.png")         # no --class: all 10 classes, one row each
    assert every_class.shape[0] == (10 * (SHAPES_SIDE + 2) + 2) * SHAPES_ZOOM


def test_labels_name_the_rows(tmp_path, shapes_models):
    grid = generate(tmp_path, "--class", "0", "6", "--n", "1", "--seed", "2", "--labels")
    expected_images = shapes_models[1].generate([0, 6], **sampling_defaults("shapes"), seed=2)
    expected = png(save_grid(expected_images, 1, tmp_path / "e.png", scale=SHAPES_ZOOM,
                             row_names=["0 red disc", "6 orange horizontal bar"]))
    assert np.array_equal(grid, expected)
    margin = grid.shape[1] - (SHAPES_SIDE + 4) * SHAPES_ZOOM
    assert margin == 7 * len("6 orange horizontal bar") + 8 and (grid[:, :margin] < 128).any()   # text is drawn


def test_list_classes(capsys):
    assert cli_main(["generate", "--model", "shapes", "--list-classes", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{i}: {name}" for i, name in enumerate(CLASS_NAMES)]


def test_steps_out_writes_every_scale(tmp_path, shapes_models):
    steps = tmp_path / "steps"
    grid = generate(tmp_path, "--class", "1", "--n", "2", "--seed", "5", "--steps-out", str(steps))
    names = sorted(p.name for p in steps.iterdir())
    assert names == sorted([f"scale{k:02d}_{what}.png" for k in range(1, SHAPES_K + 1)
                            for what in ("tokens", "contribution", "image")] + ["latents.png", "pyramid.png", "tokens.png"])
    assert np.array_equal(png(steps / "scale07_image.png"), grid)            # the last partial image is the result
    for k in range(1, SHAPES_K + 1):
        assert png(steps / f"scale{k:02d}_contribution.png").shape == grid.shape
    # scale 1 is one token per image: each image's block is that token's codebook colour
    first = next(shapes_models[1].generate_steps([1, 1], **sampling_defaults("shapes"), seed=5))
    colors_V3 = codebook_colors(shapes_models[0].quantize.embedding.weight)
    tokens = png(steps / "scale01_tokens.png")
    for b in range(2):
        left = (2 + b * (SHAPES_SIDE + 2)) * SHAPES_ZOOM
        block = tokens[2 * SHAPES_ZOOM:(2 + SHAPES_SIDE) * SHAPES_ZOOM, left:left + SHAPES_SIDE * SHAPES_ZOOM]
        want = np.round(colors_V3[int(first.tokens[b, 0, 0])] * 255).astype(np.uint8)
        assert (block == want).all()


@pytest.fixture
def official_named_tiny(tmp_path, ref_state_dicts):
    """The tiny reference weights under the official file names (the loader checks them against varlite's own
    layout for their config) and as a plain pair of files."""
    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(ref_state_dicts[0], cache / "vae_ch160v4096z32.pth")
    torch.save(ref_state_dicts[1], cache / "var_d16.pth")
    return cache


def test_official_name_and_file_pair_reproduce_the_reference_generation(tmp_path, official_named_tiny, ref_cases,
                                                                        ref_config):
    """The reference set's greedy call (made with the official code): label 3, cfg 1.5, top-k 1, seed 0."""
    call = ref_config["greedy_call"]
    args = ["--class", str(call["label_B"][0]), "--n", "1", "--cfg", str(call["cfg"]), "--top-k", str(call["top_k"]),
            "--top-p", str(call["top_p"]), "--seed", str(call["g_seed"])]
    side, zoom = 64, 1
    want_HW3 = ref_cases["greedy.img"][0].transpose(1, 2, 0) * 255
    for model_args in (["--model", "d16", "--cache-dir", str(official_named_tiny)],
                       ["--model", str(official_named_tiny / "var_d16.pth"),
                        "--vae", str(official_named_tiny / "vae_ch160v4096z32.pth")]):
        grid = generate(tmp_path, *model_args, *args)
        assert grid.shape == ((side + 4) * zoom, (side + 4) * zoom, 3)
        got_HW3 = grid[2:2 + side, 2:2 + side].astype(np.float64)
        assert np.abs(got_HW3 - want_HW3).max() <= 0.5 + 1e-3        # PNG rounding only


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_mistakes_are_one_line_with_exit_code_2(tmp_path, official_named_tiny, capsys):
    weights = official_named_tiny / "var_d16.pth"
    cases = [
        (["--class", "purple unicorn"], "error: --class 'purple unicorn' is not a class of this model: its names are "
                                        "'red disc', 'green square',"),
        (["--class", "10"], "error: --class 10 is outside this model's classes 0..9"),
        (["--model", "nope"], "error: --model 'nope' is neither a built-in model (cifar10, shapes), an official depth"),
        (["--model", str(weights)], f"error: {weights} is a single weights file: give the VQVAE file it was trained "
                                    f"with as --vae"),
        (["--model", "d20", "--cache-dir", str(official_named_tiny)], "error: no checkpoint at "),
        (["--model", "d17"], "error: there is no official VAR-d17"),
        (["--top-k", "999"], "error: top_k must be an int in [0, 256]"),
        (["--out", str(tmp_path / "grid.jpg")], f"error: --out must name a .png file (the grid is written as PNG); "
                                                f"got '{tmp_path / 'grid.jpg'}'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "error: device 'cuda' was asked for but CUDA is not available"))
    for argv, start in cases:
        assert cli_main(["generate", "--device", "cpu", "--out", str(tmp_path / "x.png"), *argv]) == 2, argv
        assert one_error_line(capsys).startswith(start), argv
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_generate_on_cuda(tmp_path, capsys):
    grid = generate(tmp_path, "--device", "cuda", "--class", "0", "--n", "2", "--steps-out", str(tmp_path / "s"))
    assert grid.shape == ((SHAPES_SIDE + 4) * SHAPES_ZOOM, (2 * SHAPES_SIDE + 6) * SHAPES_ZOOM, 3)
    assert ", cuda, " in capsys.readouterr().err
    assert len(list((tmp_path / "s").iterdir())) == 3 * SHAPES_K + 3


def test_a_training_run_generates_with_its_dataset_names(tmp_path_factory, tmp_path, capsys):
    """--model RUN_DIR: a train-var run (micro preset, 2 steps on Shapes) with its guidance and Shapes' names."""
    from tests.test_train import MICRO
    from varlite.core.configs import PRESETS
    from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer
    from varlite.train.transformer import VarTrainConfig, VarTrainer
    PRESETS[MICRO.name] = MICRO
    try:
        runs = tmp_path_factory.mktemp("runs")
        common = dict(preset=MICRO.name, dataset="shapes", steps=2, batch_size=8, eval_every=0, sample_every=0,
                      eval_images=8, progress=False, warmup_steps=1)
        assert TokenizerTrainer(TokenizerTrainConfig(run_dir=str(runs / "tok"), **common)).run().finished
        assert VarTrainer(VarTrainConfig(run_dir=str(runs / "var"), tokenizer=str(runs / "tok"), sample_cfg=2.5,
                                         samples_per_class=1, **common)).run().finished
        grid = generate(tmp_path, "--model", str(runs / "var"), "--class", "green square", "--n", "3")
        assert (f"training run {runs / 'var'}, classes 1 'green square' (one row each, 3 images), cfg 2.5, top-k 0, "
                f"top-p 0.0, more_smooth False, seed 0, cpu") in capsys.readouterr().err
        export_is_the_run_in_one_small_file(runs / "var", tmp_path / "model.safetensors", capsys)
    finally:
        del PRESETS[MICRO.name]
    assert grid.shape == ((SHAPES_SIDE + 4) * SHAPES_ZOOM, (3 * SHAPES_SIDE + 8) * SHAPES_ZOOM, 3)


def export_is_the_run_in_one_small_file(run, out, capsys):
    """export-run: the run's weights (float16) in the built-in format, without the optimizer: a fraction of the
    checkpoint, every weight within float16 rounding of the run's."""
    from safetensors import safe_open

    from varlite.train.transformer import load_var_run
    assert cli_main(["export-run", str(run), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    assert out.stat().st_size < (run / "checkpoint.pt").stat().st_size / 2
    var, configs = load_var_run(run)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["preset"] == configs["train"]["preset"]
        for key, weight in var.state_dict().items():
            torch.testing.assert_close(f.get_tensor(f"var.{key}").float(), weight.float(), atol=2e-3, rtol=1e-3)
    assert cli_main(["export-run", str(run), "--out", str(out.with_suffix(".pt"))]) == 2


def test_bf16_precision_is_the_library_generation_under_a_bfloat16_autocast(tmp_path, shapes_models, capsys):
    grid = generate(tmp_path, "--model", "shapes", "--class", "2", "--n", "2", "--seed", "4", "--precision", "bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected_images = shapes_models[1].generate([2, 2], **sampling_defaults("shapes"), seed=4)
    assert expected_images.dtype == torch.bfloat16          # the decoder did run in bfloat16
    assert np.array_equal(grid, png(save_grid(expected_images, 2, tmp_path / "e.png", scale=SHAPES_ZOOM)))
    assert ", seed 4, cpu, bf16, " in capsys.readouterr().err
    fp32 = generate(tmp_path, "--model", "shapes", "--class", "2", "--n", "2", "--seed", "4", name="fp32.png")
    assert fp32.shape == grid.shape and not np.array_equal(fp32, grid)
    assert ", seed 4, cpu, fp32, " in capsys.readouterr().err
