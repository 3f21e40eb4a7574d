"""Your own model in a real browser: a train-var run in the cache folder is loaded on the Models page, becomes the
sidebar's model, and its step-through downloads as a GIF (Encode page); an oversized upload is explained and a
weights export uploads instead; the upload folder goes with the server -- Chromium through Playwright, as
tests/test_browser.py (install: `apt-get install -y chromium`; never `playwright install`)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.browser_harness import ARTIFACTS, CHROMIUM_ARGS, checked_page, chromium_path, serve_app_for_tests, \
    streamlit_process
from tests.test_browser import SETTLE_MS, check_page, open_page, screenshot, settle

playwright_sync = pytest.importorskip("playwright.sync_api")

SHAPES_K = 7


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A cache folder holding runs/mine: a train-var run of the shapes preset (2 steps, ~10 s) and its tokenizer run.
    (The server is another process: the run's preset must be one varlite ships.)"""
    from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer
    from varlite.train.transformer import VarTrainConfig, VarTrainer
    home = tmp_path_factory.mktemp("varlite_home_runs")
    common = dict(preset="shapes", dataset="shapes", steps=2, batch_size=8, eval_every=0, sample_every=0,
                  eval_images=8, progress=False, warmup_steps=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert TokenizerTrainer(TokenizerTrainConfig(run_dir=str(home / "runs" / "tok"), **common)).run().finished
        assert VarTrainer(VarTrainConfig(run_dir=str(home / "runs" / "mine"), tokenizer=str(home / "runs" / "tok"),
                                         samples_per_class=1, **common)).run().finished
    finally:
        torch.set_num_threads(threads)
    return home


@pytest.fixture(scope="module")
def server(home):
    with serve_app_for_tests(home, "streamlit-server-models.log") as url:
        yield url


@pytest.fixture
def page(server):
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        with checked_page(browser, SETTLE_MS, accept_downloads=True) as pg:
            yield pg
        browser.close()


def download(pg, button: str, file_name: str, folder) -> Image.Image:
    """Click a download button; check the file's suggested name and open the file."""
    with pg.expect_download() as info:
        pg.get_by_role("button", name=button).click()
    assert info.value.suggested_filename == file_name
    saved = folder / file_name
    info.value.save_as(saved)
    return Image.open(saved)


def picked(pg) -> str:
    """The sidebar model picker's shown choice."""
    return pg.locator(".st-key-model_picker").get_by_role("combobox").input_value()


def test_load_a_training_run_then_export_its_step_through_as_a_gif(page, server, home, tmp_path):
    open_page(page, server, "models", "Your own model")
    page.get_by_role("button", name="Load this run").click()
    page.get_by_text("Loaded: mine").wait_for()
    settle(page)
    check_page(page)
    assert "Your run: mine" in picked(page)
    assert page.get_by_text("10 classes: 0: red disc, 1: green square").count() == 1      # Shapes' names
    screenshot(page, "models-own-run")

    page.locator('[data-testid="stSidebarNav"]').get_by_text("Encode").click()
    page.get_by_text("Rest left after this scale").wait_for()
    settle(page)
    check_page(page)
    assert "Your run: mine" in picked(page)        # still the run's model
    gif = download(page, "Step-through as GIF", "varlite_mine_encoding.gif", tmp_path)
    assert gif.format == "GIF" and gif.n_frames == SHAPES_K

    page.locator('[data-testid="stSidebarNav"]').get_by_text("Generate").click()
    page.get_by_text(f"Scale 1 of {SHAPES_K}:").wait_for()
    settle(page)
    check_page(page)
    assert page.get_by_text("Model mine:").count() == 1                              # the run's model generates
    gif = download(page, "Step-through as GIF", "varlite_mine_class0_seed0.gif", tmp_path)
    assert gif.format == "GIF" and gif.n_frames == SHAPES_K
    strip = download(page, "Step-through as PNG strip", "varlite_mine_class0_seed0.png", tmp_path)
    assert strip.format == "PNG" and strip.width > strip.height                     # scales side by side


def test_an_oversized_upload_is_explained_and_an_export_loads_and_its_folder_goes_with_the_server(home, tmp_path):
    """The uploader says the limit and how to get under it (a weights-only export); the export of the run loads; the
    server's upload folder (in its TMPDIR) is deleted when the server is stopped (SIGTERM, as Ctrl-C or a kill)."""
    from varlite import builtin
    from varlite.train.transformer import load_var_run
    if chromium_path() is None:
        pytest.skip("Chromium is missing: run `apt-get install -y chromium`")
    var, configs = load_var_run(home / "runs" / "mine")
    export = builtin.save_builtin(tmp_path / "mine.safetensors", configs["train"]["preset"], var.vqvae, var)
    too_big = tmp_path / "checkpoint.pt"
    too_big.write_bytes(bytes(11 * 2**20))
    temp = tmp_path / "tmp"
    temp.mkdir()
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_process(env={"VARLITE_HOME": str(home), "TMPDIR": str(temp)},
                           log_path=ARTIFACTS / "streamlit-server-uploads.log") as (url, _):
        with playwright_sync.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
            with checked_page(browser, SETTLE_MS) as pg:
                open_page(pg, url, "models", "Your own model")
                pg.get_by_role("tab", name="Upload weights files").click()
                model_input = pg.locator(".st-key-models_upload_var input[type=file]")
                model_input.set_input_files(str(too_big))
                settle(pg)
                shown = pg.locator('[data-testid="stMain"]').inner_text()
                assert "Weights files up to 10 MB each" in shown, shown
                assert "python -m varlite export-run RUN --out model.safetensors" in shown
                assert not list(temp.glob("varlite-uploads-*"))          # nothing reached the server's store
                model_input.set_input_files(str(export))
                settle(pg)
                pg.get_by_role("button", name="Load the uploaded files").click()
                pg.get_by_text("Loaded: mine").wait_for()
                settle(pg)
                check_page(pg)
                assert "Uploaded: mine" in picked(pg)
                assert len(list(temp.glob("varlite-uploads-*/*.pth"))) == 1
            browser.close()
    assert not list(temp.glob("varlite-uploads-*"))
