"""Your own model in the app (issue 12 sec 3): a train-var run from the model folders or uploaded weights files joins
the picker and works on every page; paths outside the model folders and bad uploads end as clear messages that
never quote a file."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")

from app import loaders, uploads  # noqa: E402
from tests.test_app import PAGES, assert_clean, new_app, png_bytes, settings  # noqa: E402
from tests.test_train import folder, micro_preset_one_thread, tokenizer_run, var_run  # noqa: E402,F401 (fixtures)
from varlite.train.transformer import load_var_run  # noqa: E402

FOLDER_NAMES = [f"class{i:02d}" for i in range(10)]        # the sub-folders of tests.test_train's image folder


class Boom:
    """Pickles as a call of print: a file holding it must be refused unread (weights_only)."""

    def __reduce__(self):
        return (print, ("executed",))


@pytest.fixture
def homes(tmp_path, monkeypatch, var_run, tokenizer_run):
    """A cache folder holding copies of the test's runs as runs/mine (train-var) and runs/tok (train-tokenizer),
    and a second model folder (VARLITE_MODEL_DIRS) holding nothing; returns runs/mine."""
    home = tmp_path / "home"
    shutil.copytree(var_run, home / "runs" / "mine")
    shutil.copytree(tokenizer_run, home / "runs" / "tok")
    (tmp_path / "more_models").mkdir()
    monkeypatch.setenv("VARLITE_HOME", str(home))
    monkeypatch.setenv("VARLITE_MODEL_DIRS", str(tmp_path / "more_models"))
    return (home / "runs" / "mine").resolve()


def load_found_run(at, run_dir):
    at.selectbox(key="models_run_found").set_value(str(run_dir)).run()
    at.button(key="models_load_found_run").click().run()


def upload(at, key, name, data):
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()


def error_text(at) -> str:
    return " ".join(e.value for e in at.error)


def state_dict_bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def test_a_run_in_the_model_folders_is_listed_loaded_and_used_on_every_page(homes):
    at = new_app("views/models.py")
    found = at.selectbox(key="models_run_found").options
    assert found == ["runs/mine"]          # the train-var run only (not the tokenizer run), relative to its folder
    load_found_run(at, homes)
    assert_clean(at)
    key = f"run:{homes.resolve()}"
    assert settings(at).model_key == key
    picker = at.sidebar.selectbox(key="model_picker")
    assert picker.value == key and f"Your run: {homes.name}" in picker.options
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Loaded: " + homes.name in " ".join(h.value for h in at.subheader)
    assert "training run" in text and "0: class00, 1: class01" in text and "test-micro" in text
    model = loaders.load_model(key)
    assert model.class_names == tuple(FOLDER_NAMES) and model.sampling == {"cfg": 1.5, "top_k": 0, "top_p": 0.0}
    var, _ = load_var_run(homes)
    assert all(torch.equal(a, b) for a, b in zip(var.state_dict().values(), model.var.state_dict().values()))
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at)
        assert settings(at).model_key == key, page
        if page == "views/generate.py":
            assert [b.key for b in at.get("download_button")] == ["gen_export_gif", "gen_export_png",
                                                                  "gen_export_html"]
    at.switch_page("views/encode.py").run()
    at.radio(key="enc_source").set_value("Upload").run()
    at.file_uploader(key="enc_upload").set_value(("wide.png", png_bytes("RGB", (90, 60)), "image/png")).run()
    assert_clean(at)
    notes = " ".join(w.value for w in at.warning)
    assert "centre-cropped from 90x60 to 60x60" in notes and "resized from 60x60 to 32x32" in notes
    at.switch_page("views/edit.py").run()
    at.radio(key="edit_source").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value(("tall.png", png_bytes("RGBA", (40, 64)), "image/png")).run()
    assert_clean(at)
    notes = " ".join(w.value for w in at.warning)
    assert "converted from RGBA to RGB" in notes and "resized from 40x40 to 32x32" in notes


def test_a_typed_run_folder_loads_and_a_path_outside_the_folders_is_refused_unread(homes, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "checkpoint.pt").write_bytes(b"root:x:0:0")
    at = new_app("views/models.py")
    for typed in (str(secret), str(secret / "checkpoint.pt"), "../../etc/passwd", ""):
        at.text_input(key="models_run_path").set_value(typed).run()
        at.button(key="models_load_run").click().run()
        assert not at.exception
        assert "not in the model folder" in error_text(at) and "root:x" not in error_text(at)
    at.text_input(key="models_run_path").set_value(str(homes / "checkpoint.pt")).run()
    at.button(key="models_load_run").click().run()
    assert_clean(at)
    assert settings(at).model_key == f"run:{(homes / 'checkpoint.pt').resolve()}"


def test_a_tokenizer_run_or_a_missing_run_is_explained(homes):
    at = new_app("views/models.py")
    at.text_input(key="models_run_path").set_value("runs/tok").run()            # relative to the cache folder
    at.button(key="models_load_run").click().run()
    assert not at.exception
    assert "is a 'tokenizer' checkpoint, but a 'var' checkpoint is needed here" in error_text(at)
    at.text_input(key="models_run_path").set_value(str(homes.parent / "nothing")).run()
    at.button(key="models_load_run").click().run()
    assert "does not exist" in error_text(at)
    assert settings(at).model_key == "builtin:shapes"


def test_an_uploaded_run_checkpoint_loads_without_reading_server_folders(homes):
    at = new_app("views/models.py")
    upload(at, "models_upload_var", "checkpoint.pt", (homes / "checkpoint.pt").read_bytes())
    at.button(key="models_load_upload").click().run()
    assert_clean(at)
    key = settings(at).model_key
    assert key.startswith("upload:") and len(key) == len("upload:") + 64
    model = loaders.load_model(key)
    assert model.class_names == ("",) * 10          # a folder dataset's names are not read for an upload
    assert model.class_label(3) == "class 3" and "uploaded training checkpoint `checkpoint.pt`" in model.source
    at.switch_page("views/generate.py").run()
    assert_clean(at)


def test_an_uploaded_state_dict_pair_loads_and_a_lone_var_is_explained(homes):
    var, _ = load_var_run(homes)
    at = new_app("views/models.py")
    upload(at, "models_upload_var", "my_var.pth", state_dict_bytes(var))
    at.button(key="models_load_upload").click().run()
    assert not at.exception
    assert "`my_var.pth` is the state_dict of a VAR transformer alone: it needs the VQVAE" in error_text(at)
    upload(at, "models_upload_vae", "my_vae.pth", state_dict_bytes(var.vqvae))
    at.button(key="models_load_upload").click().run()
    assert_clean(at)
    model = loaders.load_model(settings(at).model_key)
    assert model.name == "my_var" and model.files == ["my_vae.pth", "my_var.pth"]
    assert "verified" in model.verified and "/tmp" not in model.source + model.verified
    assert all(torch.equal(a, b) for a, b in zip(var.state_dict().values(), model.var.state_dict().values()))


def test_swapped_damaged_and_malicious_uploads_are_refused_by_name(homes, capsys):
    var, _ = load_var_run(homes)
    malicious = io.BytesIO()
    torch.save({"w": Boom()}, malicious)
    cases = [
        (state_dict_bytes(var.vqvae), "is a VQVAE (tokenizer) checkpoint, not a VAR"),
        (b"\x80" + np.random.default_rng(0).bytes(2000), "is a damaged legacy torch pickle"),
        ((homes / "checkpoint.pt").read_bytes()[:5000], "truncated or damaged"),
        (malicious.getvalue(), "refused to load `weights.pth`: it asks to import or call Python objects"),
    ]
    at = new_app("views/models.py")
    for data, message in cases:
        upload(at, "models_upload_var", "weights.pth", data)
        at.button(key="models_load_upload").click().run()
        assert not at.exception
        text = error_text(at)
        assert message in text and "weights.pth" in text, text
        assert "varlite-uploads-" not in text and "\\x" not in text
    assert settings(at).model_key == "builtin:shapes"
    assert "executed" not in capsys.readouterr().out


def test_uploads_over_the_limit_are_refused_before_loading(homes, monkeypatch):
    monkeypatch.setattr(uploads, "weights_upload_limit_mb", lambda: 1)
    at = new_app("views/models.py")
    upload(at, "models_upload_var", "big.pt", b"\0" * (2**20 + 1))
    at.button(key="models_load_upload").click().run()
    assert not at.exception
    assert "`big.pt` is 1.0 MB; weights uploads are limited to 1 MB here" in error_text(at)
    assert "export-run RUN --out model.safetensors" in error_text(at) and "server.maxUploadSize" in error_text(at)


def test_the_upload_store_keeps_the_last_files_and_says_when_one_is_gone(tmp_path):
    store = uploads.UploadStore(tmp_path, max_files=2)
    shas = [store.put(bytes([i]) * 10, f"f{i}.pth") for i in range(3)]
    assert store.put(bytes([2]) * 10, "again.pth") == shas[2]
    assert sorted(p.stem for p in tmp_path.glob("*.pth")) == sorted(shas[1:])
    assert store.path(shas[1]).read_bytes() == bytes([1]) * 10 and store.name(shas[2]) == "again.pth"
    for gone in (shas[0], "../../etc/passwd", "a" * 64):
        with pytest.raises(uploads.UploadedFileError, match="no longer on the server"):
            store.path(gone)


# ------------------------------------------------------------------------------------------------ step-through downloads
def test_the_generation_download_is_the_library_export_of_the_same_generation():
    from PIL import Image

    from app import downloads, ui
    from app.traces import GenSettings
    from varlite import export
    from varlite.builtin import load_builtin
    settings = GenSettings("builtin:shapes", label=3, seed=4, cfg=1.5, top_k=20)
    png = downloads.generation_file(settings, "png")
    vqvae, var = load_builtin("shapes")
    with torch.inference_mode():
        steps = [s.detached() for s in var.generate_steps([3], **settings.args())]
    model = loaders.load_model("builtin:shapes")
    title = f"varlite shapes: {ui.settings_caption(model, settings)}"
    expected = export.strip_image(steps, vqvae.quantize.embedding.weight, title=title)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(expected))
    gif = Image.open(io.BytesIO(downloads.generation_file(settings, "gif")))
    assert gif.format == "GIF" and gif.n_frames == 7
    page = downloads.generation_file(settings, "html")        # the Generate page's "Step-through as HTML page"
    assert page == export.step_through_bytes("html", steps, vqvae.quantize.embedding.weight, title=title)
    assert page.startswith(b"<!DOCTYPE html>") and b"seed 4" in page


def test_the_encode_page_offers_the_step_through_downloads():
    from app import downloads
    at = new_app("views/encode.py")
    assert_clean(at)
    buttons = at.get("download_button")
    assert len(buttons) == 3          # GIF, PNG strip, HTML page
    model = loaders.load_model("builtin:shapes")
    sample = settings(at).view["enc_sample"]
    from app import inputs
    data = inputs.sample_image_png(sample, 32)
    gif = downloads.encoding_file(model.key, data, sample, "gif")
    assert gif[:6] == b"GIF89a"
