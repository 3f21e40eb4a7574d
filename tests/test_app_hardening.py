"""What a visitor of the class server could tip over, and must not: crafted selections, crafted or broken weights,
large images, links out of the model folders, file names with markdown, the teacher's file management, leftover
upload folders, and the limits and defaults the pages state."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("streamlit")
from streamlit import config as st_config  # noqa: E402

from app import edits, figures, inputs, loaders, training_runs, uploads  # noqa: E402
from tests.test_app import assert_clean, new_app, settings  # noqa: E402
from tests.test_app_own_model import error_text, homes, load_found_run, upload  # noqa: E402,F401 (fixture)
from tests.test_train import folder, micro_preset_one_thread, tokenizer_run, var_run  # noqa: E402,F401 (fixtures)
from varlite import complexity  # noqa: E402
from varlite.core.configs import get_preset  # noqa: E402
from varlite.core.var import VAR  # noqa: E402
from varlite.core.vqvae import VQVAE  # noqa: E402
from varlite.safe_io import CheckpointError, check_finite  # noqa: E402
from varlite.train.transformer import load_var_run  # noqa: E402


# ------------------------------------------------------------------------------------------------ crafted selections
def test_a_huge_crafted_brush_costs_no_more_than_the_grid():
    """A 30 KB message naming a 3000 x 3000 box: rows and columns off the grid are dropped before pairing."""
    event = {"selection": {figures.BRUSH: {"row": list(range(-1500, 1500)), "col": list(range(3000))}}}
    tracemalloc.start()
    start = time.process_time()
    cells = figures.picked_cells(event, 16)
    seconds = time.process_time() - start
    peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cells == {(r, c) for r in range(16) for c in range(16)}
    assert seconds < 0.2 and peak_bytes < 2**20, (seconds, peak_bytes)


def test_crafted_selection_values_are_dropped_not_raised():
    junk_points = [{"row": "1", "col": 1}, {"row": True, "col": 0}, {"row": 1.5, "col": 0}, {"row": None}, 7, "x",
                   {"row": 2.0, "col": 3}]
    assert figures.picked_cells({"selection": {figures.PICK: junk_points}}, 4) == {(2, 3)}
    for event in ("junk", {"selection": "x"}, {"selection": {figures.PICK: {"row": 1}}},
                  {"selection": {figures.BRUSH: {"row": 3, "col": [1]}}},
                  {"selection": {figures.BRUSH: {"row": [[1]], "col": [1]}}}):
        assert figures.picked_cells(event, 4) == set(), event


# ------------------------------------------------------------------------------------------------ shared helpers
ROOT = Path(__file__).resolve().parent.parent


def texts(at) -> str:
    """Everything the page wrote as text (markdown, captions, errors, warnings, infos, headers)."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "subheader", "title")
             for e in getattr(at, kind)]
    return " ".join(str(p) for p in parts)


# ------------------------------------------------------------------------------------------------ NaN weights
def with_nan(checkpoint: Path, out: Path, part: str, name: str) -> Path:
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt[part][name] = ckpt[part][name].clone()
    ckpt[part][name].view(-1)[:3] = float("nan")
    torch.save(ckpt, out)
    return out


def test_nan_weights_are_refused_by_tensor_name_and_no_page_shows_a_traceback(homes, tmp_path):
    bad_dir = homes.parent / "diverged"
    shutil.copytree(homes, bad_dir)
    with_nan(homes / "checkpoint.pt", bad_dir / "checkpoint.pt", "vqvae", "quantize.embedding.weight")
    at = new_app("views/models.py")
    upload(at, "models_upload_var", "nan.pt", (bad_dir / "checkpoint.pt").read_bytes())
    at.button(key="models_load_upload").click().run()
    assert not at.exception
    text = error_text(at)
    assert "the tensor `quantize.embedding.weight` holds 3 NaN or infinite values" in text and "`nan.pt`" in text
    load_found_run(at, bad_dir.resolve())
    assert not at.exception
    assert "runs/diverged/checkpoint.pt (VQVAE): the tensor `quantize.embedding.weight` holds 3 NaN" in \
        error_text(at)
    assert str(homes.parent) not in error_text(at)                          # no server path
    assert settings(at).model_key == "builtin:shapes"


def test_builtin_and_official_loaders_check_finiteness():
    vqvae = VQVAE(get_preset("shapes").vqvae)
    check_finite(vqvae, "ok")
    with torch.no_grad():
        vqvae.decoder.conv_out.bias[1] = float("inf")
    with pytest.raises(CheckpointError, match=r"x\.pth: the tensor `decoder\.conv_out\.bias` holds 1 NaN or "
                                              r"infinite values \(of 3\)"):
        check_finite(vqvae, "x.pth")
    var = VAR(get_preset("shapes").var, VQVAE(get_preset("shapes").vqvae))
    check_finite(var, "the -inf of the attention mask is not damage")


def test_the_library_loaders_refuse_non_finite_weights(tmp_path, ref_state_dicts):
    """A VAR file with a NaN weight is refused by pretrained's loaders (which the CLI and the app use), naming it."""
    import math

    from varlite import pretrained
    vae_sd, var_sd = (dict(sd) for sd in ref_state_dicts)
    var_sd["head.bias"] = var_sd["head.bias"].clone()
    var_sd["head.bias"][3] = math.nan
    torch.save(vae_sd, tmp_path / "vae.pth")
    torch.save(var_sd, tmp_path / "var.pth")
    with pytest.raises(pretrained.CheckpointError, match=r"var\.pth: the tensor `head\.bias` holds 1 NaN or infinite"):
        pretrained.load_pair(tmp_path / "vae.pth", tmp_path / "var.pth", device="cpu")


@pytest.mark.parametrize("page, target, name", [
    ("views/encode.py", figures, "codebook_colors"),
    ("views/edit.py", edits, "source_picture"),
    ("views/cost.py", complexity, "compare"),
])
def test_a_failure_inside_a_page_is_an_error_box_without_a_traceback(page, target, name, monkeypatch):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError(f"SVD did not converge in {ROOT}/app/secret.py")
    monkeypatch.setattr(target, name, broken)
    at = new_app(page)
    assert not at.exception
    message = error_text(at)
    assert "could not be drawn: LinAlgError: SVD did not converge" in message and "Traceback" not in message


# ------------------------------------------------------------------------------------------------ large images
def test_a_large_accepted_png_is_decoded_once_per_upload_not_on_every_click(monkeypatch):
    """A 39.7-megapixel PNG (small on disk: one colour) under the 40-megapixel limit was decoded again on every
    rerun of the Edit page (5-9 s per click); it is decoded once, then the model-sized image is reused."""
    buf = io.BytesIO()
    Image.new("RGB", (6300, 6300), (200, 40, 40)).save(buf, format="PNG")
    assert len(buf.getvalue()) < inputs.MAX_UPLOAD_MB * 2**20
    decodes = []
    real = inputs.read_image_bytes
    monkeypatch.setattr(inputs, "read_image_bytes", lambda data, name="upload": decodes.append(name) or real(data,
                                                                                                              name))
    at = new_app("views/edit.py")
    at.radio(key="edit_source").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value(("huge.png", buf.getvalue(), "image/png")).run()
    assert_clean(at)
    assert decodes == ["huge.png"]
    assert "resized from 6300x6300 to 32x32" in " ".join(w.value for w in at.warning)
    start = time.monotonic()
    for seed in (1, 2, 3):
        at.number_input(key="edit_seed").set_value(seed).run()
        assert_clean(at)
    assert decodes == ["huge.png"]                     # three more reruns, no more decoding
    assert (time.monotonic() - start) / 3 < 3.0


# ------------------------------------------------------------------------------------------------ the teacher's files
@pytest.fixture
def class_server():
    """The server as `make serve` starts it: listening on every interface."""
    st_config.set_option("server.address", "0.0.0.0")
    yield
    st_config.set_option("server.address", None)


def test_a_class_server_offers_no_file_management_and_shows_no_server_paths(class_server, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("VARLITE_HOME", str(home))
    monkeypatch.delenv("VARLITE_TEACHER_TOKEN", raising=False)
    at = new_app("views/models.py")
    assert_clean(at)
    keys = {b.key for b in at.button}
    assert "models_download" not in keys and not any(k.startswith("models_delete") for k in keys)
    assert str(home) not in texts(at) and str(tmp_path) not in texts(at)
    assert "for the teacher" in texts(at)


def test_a_teacher_token_unlocks_file_management_for_that_session_only(class_server, monkeypatch, tmp_path):
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path))
    monkeypatch.setenv("VARLITE_TEACHER_TOKEN", "correct horse battery staple")
    at = new_app("views/models.py")
    at.text_input(key="models_teacher_token").set_value("guess").run()
    at.button(key="models_teacher_enter").click().run()
    assert "That is not the teacher token." in error_text(at)
    assert "models_download" not in {b.key for b in at.button}
    at.text_input(key="models_teacher_token").set_value("correct horse battery staple").run()
    at.button(key="models_teacher_enter").click().run()
    assert_clean(at)
    assert "models_download" in {b.key for b in at.button}
    assert f"Cache folder: `{tmp_path}`" in texts(at)
    other = new_app("views/models.py")                   # another browser session: locked
    assert "models_download" not in {b.key for b in other.button}


def test_a_personal_server_without_a_token_manages_its_own_files(monkeypatch):
    monkeypatch.delenv("VARLITE_TEACHER_TOKEN", raising=False)
    at = new_app("views/models.py")
    assert "models_download" in {b.key for b in at.button}


# ------------------------------------------------------------------------------------------------ links in run folders
def test_links_out_of_the_model_folders_are_not_listed_loaded_or_shown(homes, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(homes, outside / "run")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(outside / "secret.png")
    (outside / "metrics.jsonl").write_text(json.dumps({"split": "val", "step": 99, "val_loss": 0.123}) + "\n")
    runs = homes.parent
    (runs / "linked_dir").symlink_to(outside / "run", target_is_directory=True)      # a run folder leading out
    (runs / "linked_ckpt").mkdir()
    shutil.copy(homes / "config.json", runs / "linked_ckpt" / "config.json")
    (runs / "linked_ckpt" / "checkpoint.pt").symlink_to(outside / "run" / "checkpoint.pt")
    for name in list(homes.glob("samples_*.png")) + [homes / "metrics.jsonl"]:
        name.unlink(missing_ok=True)
    (homes / "samples_999999.png").symlink_to(outside / "secret.png")
    (homes / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")

    assert training_runs.training_runs() == [homes]
    at = new_app("views/models.py")
    assert at.selectbox(key="models_run_found").options == ["runs/mine"]
    for typed in ("runs/linked_dir", "runs/linked_ckpt", "runs/linked_ckpt/checkpoint.pt"):
        at.text_input(key="models_run_path").set_value(typed).run()
        at.button(key="models_load_run").click().run()
        assert not at.exception
        assert "not in the model folder" in error_text(at), typed
        assert str(tmp_path) not in error_text(at)
    load_found_run(at, homes)
    assert_clean(at)
    card = loaders.load_model(settings(at).model_key).card
    assert "samples_999999" not in card and "99" not in card.split("Last validation")[-1]


# ------------------------------------------------------------------------------------------------ upload folders
def test_stale_upload_folders_of_ended_servers_are_removed_and_live_ones_kept(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / f"{uploads.FOLDER_PREFIX}{ended.pid}-abc"
    alive = tmp_path / f"{uploads.FOLDER_PREFIX}{os.getpid()}-def"
    old_legacy, new_legacy = tmp_path / f"{uploads.FOLDER_PREFIX}k2j4_x9q", tmp_path / f"{uploads.FOLDER_PREFIX}zz1"
    for made in (dead, alive, old_legacy, new_legacy):
        made.mkdir()
        (made / "x.pth").write_bytes(b"x")
    os.utime(old_legacy, (time.time() - 2 * 86400,) * 2)
    removed = uploads.remove_stale_upload_folders(tmp_path)
    assert sorted(removed) == sorted([dead, old_legacy])
    assert alive.is_dir() and new_legacy.is_dir() and not dead.exists() and not old_legacy.exists()


def test_the_upload_folder_is_deleted_when_the_server_process_exits(tmp_path):
    script = ("from app import uploads; store = uploads.upload_store(); store.put(b'abc', 'a.pth'); "
              "print(store.folder)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    store_folder = Path(out.stdout.strip().splitlines()[-1])
    assert store_folder.parent == tmp_path and store_folder.name.startswith(uploads.FOLDER_PREFIX), out
    assert not store_folder.exists() and not list(tmp_path.glob(f"{uploads.FOLDER_PREFIX}*"))


# ------------------------------------------------------------------------------------------------ names as text
MARKDOWN_NAME = "[click me](http://evil.example) **BIG** :red[x] $x^2$ `tick.pth"


def test_markdown_in_an_uploaded_file_name_is_shown_as_code(homes):
    assert uploads.literal(MARKDOWN_NAME) == f"``{MARKDOWN_NAME}``"        # a longer fence than the ` inside
    assert uploads.literal("a.pth`") == "`` a.pth` ``" and uploads.literal("a\n\n# b.pth") == "`a  # b.pth`"
    at = new_app("views/models.py")
    upload(at, "models_upload_var", MARKDOWN_NAME, b"\x80" + bytes(2000))
    at.button(key="models_load_upload").click().run()
    assert not at.exception
    assert f"``{MARKDOWN_NAME}``" in error_text(at)
    assert error_text(at).count("http://evil.example") == 1             # only inside the code span
    at = new_app("views/encode.py")
    at.radio(key="enc_source").set_value("Upload").run()
    at.file_uploader(key="enc_upload").set_value((MARKDOWN_NAME, b"not an image", "image/png")).run()
    assert not at.exception
    assert f"``{MARKDOWN_NAME}`` is not an image this app can read" in error_text(at)


def test_an_uploaded_model_goes_by_a_name_with_nothing_to_render(homes):
    at = new_app("views/models.py")
    upload(at, "models_upload_var", "**my** [run].pt", (homes / "checkpoint.pt").read_bytes())
    at.button(key="models_load_upload").click().run()
    assert_clean(at)
    model = loaders.load_model(settings(at).model_key)
    assert model.name == "my-run"
    assert "Uploaded: my-run" in at.sidebar.selectbox(key="model_picker").options


# ------------------------------------------------------------------------------------------------ weights exports
@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_a_weights_export_uploads_and_loads_with_its_settings(homes, tmp_path, storage):
    """The file `python -m varlite export-run` is to write: the built-in format (safetensors, the VQVAE and the VAR,
    float16 or int8), with the dataset's class names."""
    from varlite import builtin
    var, configs = load_var_run(homes)
    path = builtin.save_builtin(tmp_path / "model.safetensors", configs["train"]["preset"], var.vqvae, var,
                                sampling={"cfg": 2.5}, storage=storage)
    at = new_app("views/models.py")
    upload(at, "models_upload_var", "model.safetensors", path.read_bytes())
    at.button(key="models_load_upload").click().run()
    assert_clean(at)
    model = loaders.load_model(settings(at).model_key)
    assert model.name == "model" and model.default("cfg") == 2.5 and "weights export" in model.source
    for part, original in (("vqvae", var.vqvae), ("var", var)):
        loaded = (model.vqvae if part == "vqvae" else model.var).state_dict()
        for key, value in original.state_dict().items():
            if value.is_floating_point() and key != "attn_bias_for_masking":
                assert torch.allclose(loaded[key], value, atol=0.05, rtol=0.02), (part, key)
    at.switch_page("views/generate.py").run()
    assert_clean(at)


def test_a_crafted_export_naming_a_huge_preset_is_refused(tmp_path):
    from safetensors.torch import save_file
    from varlite import builtin
    path = tmp_path / "x.safetensors"
    save_file({"var.pos_1LC": torch.zeros(1, 680, 1024)}, path, metadata={
        "format": builtin.FORMAT, "version": builtin.VERSION, "preset": "d16", "storage": "float16"})
    with pytest.raises(loaders.CheckpointError, match="does not fit preset 'd16': vqvae tensors missing"):
        loaders.read_exported_weights(path, "x.safetensors", "cpu")
    save_file({"var.w": torch.zeros(2)}, path, metadata={"format": "other"})
    with pytest.raises(loaders.CheckpointError, match="not a varlite weights export"):
        loaders.read_exported_weights(path, "x.safetensors", "cpu")


# ------------------------------------------------------------------------------------------------ what the pages say
def test_the_upload_limit_and_how_to_get_under_it_are_stated_beside_the_uploader():
    at = new_app("views/models.py")
    text = texts(at)
    assert "up to **10 MB** each" in text and "python -m varlite export-run RUN --out model.safetensors" in text
    assert "server.maxUploadSize" in text
    assert "export-run" in at.file_uploader(key="models_upload_var").proto.help


def test_the_cost_page_measures_warm_by_default(monkeypatch):
    import streamlit as st
    st.cache_data.clear()
    runs = []
    real = VAR.generate_steps

    def counted(self, *args, **kwargs):
        runs.append(1)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(VAR, "generate_steps", counted)
    at = new_app("views/cost.py")
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "measured warm: one untimed warm-up run, then the same generation timed 3 times" in captions
    before = len(runs)
    at.button(key="cost_measure").click().run()
    assert_clean(at)
    assert len(runs) - before == 4           # shapes is small: a warm-up, then three timed runs
    assert "(measurement 2)" in " ".join(c.value for c in at.caption)


def test_encode_opens_on_a_sample_of_the_models_own_dataset(monkeypatch):
    at = new_app("views/encode.py", model_key="builtin:cifar10")
    assert_clean(at)
    assert at.selectbox(key="enc_sample").value == "photo: astronaut"     # CIFAR-10 is not on this machine
    monkeypatch.setattr(inputs, "_cifar10_available", lambda: True)
    assert inputs.sample_names(loaders.load_model("builtin:cifar10"))[0] == "cifar10 test image 0"
    assert inputs.sample_names(loaders.load_model("builtin:shapes"))[0] == "shapes: red disc"


def test_one_codebook_entry_is_singular():
    at = new_app("views/encode.py")
    assert "1x1 tokens, 1 distinct codebook entry (of" in " ".join(h.value for h in at.subheader)


def test_token_surgerys_strip_shows_the_replaced_tokens_in_blue(monkeypatch):
    from streamlit.elements.image import ImageMixin
    shown = []
    real = ImageMixin.image

    def recording(self, image, *args, **kwargs):
        shown.append((kwargs.get("caption"), image))
        return real(self, image, *args, **kwargs)
    monkeypatch.setattr(ImageMixin, "image", recording)
    at = new_app("views/edit.py")
    at.radio(key="edit_op").set_value("surgery").run()
    assert_clean(at)
    si = settings(at).view["edit_surgery_scale"]
    pn = loaders.load_model("builtin:shapes").patch_nums[si]
    strips = [img for caption, img in shown if caption == f"{pn}x{pn}" and isinstance(img, bytes)]
    rgb = np.asarray(Image.open(io.BytesIO(strips[-1])).convert("RGB"))
    assert (rgb == (40, 110, 230)).all(axis=-1).any()                      # the replaced tokens, blue
    assert "blue = replaced by the chosen token" in " ".join(m.value for m in at.markdown)
