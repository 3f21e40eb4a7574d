"""varlite.export: a step-through as a GIF (one frame per scale) and a PNG strip, pixel by pixel."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from varlite import export
from varlite.builtin import load_builtin
from varlite.images import prepare_image
from varlite.viz import codebook_colors
from tests.test_train import folder, micro_preset_one_thread, tokenizer_run, var_run  # noqa: F401 (fixtures: a tiny run)

PX = 64


@pytest.fixture(scope="module")
def shapes():
    vqvae, var = load_builtin("shapes", "cpu")
    with torch.inference_mode():
        steps = [step.detached() for step in var.generate_steps([3], cfg=1.5, seed=0)]
    return vqvae, steps


def codebook(vqvae):
    return vqvae.quantize.embedding.weight


def test_panels_show_tokens_in_codebook_colours_the_shared_contribution_scale_and_the_image(shapes):
    vqvae, steps = shapes
    panels = export.scale_panels(steps, codebook(vqvae), panel_px=PX)
    assert len(panels) == len(steps) == 7
    colors_V3 = codebook_colors(codebook(vqvae))
    norms = [s.contribution[0].norm(dim=0) for s in steps]
    vmax = max(float(n.max()) for n in norms)
    for step, norm_HW, (tokens, contribution, image) in zip(steps, norms, panels):
        assert tokens.shape == contribution.shape == image.shape == (PX, PX, 3)
        assert tokens.dtype == np.uint8
        side, cell = step.pn, PX // step.pn
        for r in range(side):
            for c in range(side):           # a pixel inside cell (r, c), also when the side does not divide PX
                y, x = int(np.ceil(r * PX / side)), int(np.ceil(c * PX / side))
                want = np.round(colors_V3[int(step.tokens[0, r, c])] * 255)
                np.testing.assert_array_equal(tokens[y, x], want)
        H = norm_HW.shape[0]
        want_c = np.round(colormaps["viridis"](norm_HW.numpy() / vmax)[..., :3] * 255).astype(np.uint8)
        np.testing.assert_array_equal(contribution[:: PX // H, :: PX // H], want_c)
        img_u8 = step.image()[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(image[:: PX // 32, :: PX // 32], img_u8)     # 32-px images, enlarged twice
    brightest = int(np.argmax([float(n.max()) for n in norms]))
    top = np.round(np.array(colormaps["viridis"](1.0)[:3]) * 255)
    assert (panels[brightest][1].reshape(-1, 3) == top).all(axis=1).any()       # the largest norm is yellow


def test_a_large_image_is_shrunk_by_area_averaging(shapes):
    vqvae, steps = shapes
    tokens, contribution, image = export.scale_panels(steps[-1:], codebook(vqvae), panel_px=16)[0]
    img = steps[-1].image()[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    box = img.reshape(16, 2, 16, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(image.astype(float) - box).max() <= 1.0
    assert tokens.shape == (16, 16, 3)


def test_strip_puts_scales_in_columns_and_the_three_panels_in_rows(shapes):
    vqvae, steps = shapes
    strip = np.asarray(export.strip_image(steps, codebook(vqvae), panel_px=PX, title="shapes, class 3"))
    panels = export.scale_panels(steps, codebook(vqvae), panel_px=PX)
    height, width, _ = strip.shape
    K, step_px = len(steps), PX + export.GAP
    for k, row in enumerate(panels):
        x = width - (K - k) * step_px
        for r, panel in enumerate(row):
            y = height - (3 - r) * step_px
            np.testing.assert_array_equal(strip[y:y + PX, x:x + PX], panel)


def test_frames_one_per_scale_with_the_panels_side_by_side(shapes):
    vqvae, steps = shapes
    frames = export.step_frames(steps, codebook(vqvae), panel_px=PX, title="t")
    panels = export.scale_panels(steps, codebook(vqvae), panel_px=PX)
    assert len(frames) == 7 and len({f.size for f in frames}) == 1
    assert frames[0].width == export.GAP + 3 * (PX + export.GAP)
    for frame, row in zip(frames, panels):
        a = np.asarray(frame)
        y = a.shape[0] - export.GAP - PX
        for i, panel in enumerate(row):
            x = export.GAP + i * (PX + export.GAP)
            np.testing.assert_array_equal(a[y:y + PX, x:x + PX], panel)


def test_gif_has_one_frame_per_scale_and_holds_the_last(shapes):
    vqvae, steps = shapes
    data = export.step_through_bytes("gif", steps, codebook(vqvae), frame_ms=500)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 7 and gif.info["loop"] == 0
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations == [500] * 6 + [2500]
    gif.seek(0)
    first = np.asarray(gif.convert("RGB"))
    frame0 = np.asarray(export.step_frames(steps, codebook(vqvae))[0])
    assert first.shape == frame0.shape
    assert np.abs(first.astype(int) - frame0.astype(int)).mean() < 3      # a 256-colour palette per frame


def test_an_encoding_exports_too(shapes):
    vqvae, _ = shapes
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = (220, 40, 40)
    x, _ = prepare_image(img, 32)
    with torch.inference_mode():
        steps = [s.detached() for s in vqvae.encode_steps(x)]
    png = Image.open(io.BytesIO(export.step_through_bytes("png", steps, codebook(vqvae), panel_px=PX)))
    assert png.format == "PNG"
    last = np.asarray(png)[-PX - export.GAP:-export.GAP, -PX - export.GAP:-export.GAP]
    want = steps[-1].image()[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(last[::2, ::2], want)


def test_save_chooses_the_format_by_suffix(shapes, tmp_path):
    vqvae, steps = shapes
    gif = export.save_step_through(tmp_path / "a" / "anim.GIF", steps, codebook(vqvae))
    png = export.save_step_through(tmp_path / "strip.png", steps, codebook(vqvae))
    assert gif.read_bytes()[:6] == b"GIF89a"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("call,message", [
    (lambda s, cb: export.scale_panels([], cb), "no steps to export"),
    (lambda s, cb: export.scale_panels(s, cb, panel_px=4), "panel_px must be at least 8"),
    (lambda s, cb: export.check_export_path("x.jpg"), "must be a .gif file"),
    (lambda s, cb: export.step_through_bytes("mp4", s, cb), "unknown export kind 'mp4'"),
    (lambda s, cb: export.gif_bytes([]), "no frames"),
])
def test_errors_say_what_was_expected(shapes, call, message):
    vqvae, steps = shapes
    with pytest.raises(ValueError, match=message):
        call(steps, codebook(vqvae))


def test_a_step_without_its_image_is_refused_by_the_step(shapes):
    vqvae, var = load_builtin("shapes", "cpu")
    with torch.inference_mode():
        steps = [s.detached(decode=False) for s in var.generate_steps([0], seed=0)]
    with pytest.raises(RuntimeError, match="no decoder attached"):
        export.scale_panels(steps, codebook(vqvae))


# ------------------------------------------------------------------------------------------------ the figure command
def test_figure_command_writes_the_library_strip_with_the_recommended_sampling(shapes, tmp_path, capsys):
    from varlite.builtin import sampling_defaults
    from varlite.cli import main as cli_main
    vqvae, _ = shapes
    out = tmp_path / "strip.png"
    assert cli_main(["figure", "--model", "shapes", "--class", "yellow ring", "--seed", "0", "--device", "cpu",
                     "--out", str(out), "--title", ""]) == 0
    _, var = load_builtin("shapes", "cpu")
    with torch.inference_mode():
        steps = [s.detached() for s in var.generate_steps([3], **sampling_defaults("shapes"), seed=0)]
    expected = export.strip_image(steps, codebook(vqvae))
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
    err = capsys.readouterr().err
    assert "(a strip of 7 scales): built-in shapes, class 3 'yellow ring', cfg 1.5, top-k 20, top-p 0.0, more_smooth False, seed 0" in err


def test_figure_command_gif_unconditional_in_bfloat16(tmp_path, capsys):
    from varlite.cli import main as cli_main
    out = tmp_path / "anim.gif"
    assert cli_main(["figure", "--class", "unconditional", "--cfg", "0", "--device", "cpu", "--out", str(out),
                     "--panel-px", "48", "--frame-ms", "300", "--precision", "bf16"]) == 0
    gif = Image.open(out)
    assert gif.n_frames == 7 and gif.info["duration"] == 300
    assert gif.width == export.GAP + 3 * (48 + export.GAP)
    assert "class 10 'unconditional', cfg 0.0, top-k 20, top-p 0.0, more_smooth False, seed 0, cpu, bf16," in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--out", "slide.jpg"], "the export must be a .gif file"),
    (["--model", "no/such/run", "--out", "a.gif"], "--model 'no/such/run' is neither a built-in model"),
    (["--class", "zebra", "--out", "a.png"], "--class 'zebra' is not a class of this model"),
    (["--class", "10", "--out", "a.png"], "--class 10 is outside this model's classes 0..9"),
])
def test_figure_mistakes_are_one_line_with_exit_code_2(tmp_path, capsys, argv, message):
    from varlite.cli import main as cli_main
    argv = [a if not a.endswith((".gif", ".png", ".jpg")) else str(tmp_path / a) for a in argv]
    assert cli_main(["figure", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_figure_from_a_training_run_on_an_image_folder_has_its_folder_names(var_run, tmp_path, capsys):
    """A train-var run (micro preset) on an image folder: the classes are the folder's sub-folder names."""
    from varlite.cli import main as cli_main
    assert cli_main(["figure", "--model", str(var_run), "--list-classes"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{i}: class{i:02d}" for i in range(10)]
    out = tmp_path / "run.png"
    assert cli_main(["figure", "--model", str(var_run), "--class", "class03", "--device", "cpu", "--out", str(out),
                     "--title", ""]) == 0
    assert f"training run {var_run}, class 3 'class03', cfg 1.5, top-k 0, top-p 0.0" in capsys.readouterr().err
    from varlite.train.transformer import load_var_run
    var, _ = load_var_run(var_run)
    with torch.inference_mode():
        steps = [s.detached() for s in var.generate_steps([3], cfg=1.5, seed=0)]
    expected = export.strip_image(steps, codebook(var.vqvae))
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
