"""The Streamlit walkthrough, driven headless by ``streamlit.testing.v1.AppTest``: every page and control path,
the session's settings across pages and models, and every bad input ends as an explanatory message in the page,
never a traceback."""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import edits, figures, loaders, registry, traces  # noqa: E402
from app.traces import GenSettings, GenerationRun, TraceStore  # noqa: E402
from varlite import builtin, imagenet, pretrained  # noqa: E402
from varlite.core.configs import get_preset  # noqa: E402
from varlite.core.var import VAR  # noqa: E402
from varlite.core.vqvae import VQVAE  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
PAGES = ["views/generate.py", "views/encode.py", "views/edit.py", "views/cost.py", "views/models.py"]
TIMEOUT = 180          # the first run imports torch, matplotlib and altair
SHAPES = "builtin:shapes"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Official weights are looked up in an empty cache folder: no test sees (or downloads) real checkpoints."""
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path_factory.getbasetemp() / "varlite_home"))
    monkeypatch.delenv("VARLITE_MODEL_DIRS", raising=False)


def new_app(page: str | None = None, model_key: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if model_key:
        at.query_params["model"] = model_key
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def settings(at: AppTest):
    return at.session_state["settings"]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def heading_scale(at: AppTest) -> tuple[int, int]:
    """(k, K) from the Generate page's 'Scale k of K: ...' heading."""
    text = next(h.value for h in at.subheader if h.value.startswith("Scale "))
    k, K = re.match(r"Scale (\d+) of (\d+)", text).groups()
    return int(k), int(K)


def rerun_until(at: AppTest, done, timeout_s: float = TIMEOUT) -> AppTest:
    """Run the page again until ``done(at)``: the step viewer never waits for the scheduler (a browser's timer reruns
    it while scales are being computed or decoded; AppTest has no timer)."""
    deadline = time.monotonic() + timeout_s
    while not done(at):
        assert time.monotonic() < deadline, f"the page did not get there in {timeout_s} s"
        time.sleep(0.2)
        at.run()
    return at


def shows(k: int):
    """``rerun_until``'s condition: the heading of scale k is drawn."""
    return lambda at: any(h.value.startswith(f"Scale {k} of ") for h in at.subheader)


def scale_slider(at: AppTest):
    return next(s for s in at.slider if s.key and s.key.startswith("gen_scale_"))


def png_bytes(mode: str, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(0)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ every page
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_errors(page):
    at = new_app(page)
    assert_clean(at)
    assert at.title, "every page has a title"
    assert at.expander, "every page explains what it shows"


def test_default_model_is_the_builtin_shapes_model():
    at = new_app()
    assert settings(at).model_key == SHAPES
    assert at.sidebar.selectbox(key="model_picker").value == SHAPES


def test_a_link_can_pick_the_model():
    at = new_app(model_key=registry.UNTRAINED_TINY)
    assert_clean(at)
    assert settings(at).model_key == registry.UNTRAINED_TINY


def linked_app(params: dict[str, str]) -> AppTest:
    """The app opened from a link carrying ``params`` (a fresh session)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(params)
    return at.run()


def test_a_link_opens_the_same_view():
    """The Generate page keeps its settings, scale and picked token in the address; a new session opened from that
    address shows the same view."""
    at = new_app()
    at.selectbox(key=f"gen_class@{SHAPES}").set_value(3)
    at.number_input(key="gen_seed").set_value(7)
    at.slider(key="gen_cfg").set_value(2.5)
    at.number_input(key="gen_top_k").set_value(9).run()
    for _ in range(3):
        at.button(key="gen_next").click().run()
    at.session_state["gen_pick_tokens_3_2_2"] = {"selection": {"pick": [{"row": 1, "col": 3}]}}   # a click
    at.run()
    link = dict(at.query_params)
    assert link == {"model": SHAPES, "class": "3", "seed": "7", "cfg": "2.5", "top_k": "9", "top_p": "0",
                    "smooth": "0", "scale": "4", "pick": "1,3"}
    opened = linked_app(link)
    assert_clean(opened)
    assert not opened.sidebar.info
    assert heading_scale(opened)[0] == 4 and settings(opened).position(4) == (1, 3)
    assert opened.selectbox(key=f"gen_class@{SHAPES}").value == 3 and opened.number_input(key="gen_seed").value == 7
    assert (opened.slider(key="gen_cfg").value, opened.number_input(key="gen_top_k").value) == (2.5, 9)
    assert any("Position **(1, 3)**" in m.value for m in opened.markdown)
    compared = linked_app({"model": "builtin:cifar10", "compare": "1", "seed_b": "4", "cfg_b": "6"})
    assert_clean(compared)
    assert compared.number_input(key="gen_seed_b").value == 4 and compared.slider(key="gen_cfg_b").value == 6.0
    assert compared.slider(key="gen_cfg").value == builtin.sampling_defaults("cifar10")["cfg"]


def test_bad_values_in_a_link_are_named_in_a_note_never_raised():
    at = linked_app({"model": "official:d99", "class": "cat", "seed": "-1", "cfg": "nan", "top_k": "9999",
                     "top_p": "0.5", "smooth": "maybe", "scale": "99", "pick": "1;2"})
    assert_clean(at)
    notes = [i.value for i in at.sidebar.info]
    model = loaders.load_model(SHAPES)
    rec = builtin.sampling_defaults("shapes")
    for expected in ["model `official:d99` is not offered", f"class=`cat` is not a whole number from 0 to {model.num_classes}: "
                     "using 0: red disc", "seed=`-1`", "cfg=`nan` is not a number from 0 to 8: using cfg 1.5",
                     f"top_k=`9999` is not a whole number from 0 to {model.vocab_size}: using top_k 20",
                     "smooth=`maybe` is not 0 or 1", "scale=`99`", "pick=`1;2` is not a token row,col of scale 1"]:
        assert any(expected in note for note in notes), (expected, notes)
    s = settings(at)
    assert (s.model_key, s.label, s.seed, s.cfg, s.top_k, s.scale) == (SHAPES, 0, 0, rec["cfg"], rec["top_k"], 1)
    assert s.top_p == 0.5            # the good values of the link are used
    assert heading_scale(at)[0] == 1


# ------------------------------------------------------------------------------------------------ settings
def test_settings_survive_a_trip_to_another_page():
    at = new_app()
    at.number_input(key="gen_seed").set_value(5).run()
    at.number_input(key="gen_top_k").set_value(30).run()
    at.button(key="gen_next").click().run()
    assert heading_scale(at)[0] == 2
    at.switch_page("views/cost.py").run()
    assert_clean(at)
    assert any("seed 5" in c.value and "top-k 30" in c.value for c in at.caption), [c.value for c in at.caption]
    at.switch_page("views/generate.py").run()
    assert_clean(at)
    assert at.number_input(key="gen_seed").value == 5
    assert at.number_input(key="gen_top_k").value == 30
    assert heading_scale(at)[0] == 2 and scale_slider(at).value == 2


def test_switching_the_model_resets_its_classes_and_applies_its_recommended_sampling():
    at = new_app()
    at.selectbox(key=f"gen_class@{SHAPES}").set_value(3).run()
    assert at.selectbox(key=f"gen_class@{SHAPES}").value == 3
    at.number_input(key="gen_top_k").set_value(200).run()
    at.button(key="gen_next").click().run()
    at.sidebar.selectbox(key="model_picker").set_value(registry.UNTRAINED_TINY).run()
    assert_clean(at)
    tiny = loaders.load_model(registry.UNTRAINED_TINY)
    picker = at.selectbox(key=f"gen_class@{registry.UNTRAINED_TINY}")
    assert picker.value == 0
    assert picker.options[:2] == ["class 0", "class 1"] and picker.options[-1] == f"{tiny.num_classes}: unconditional"
    assert at.number_input(key="gen_top_k").value == loaders.GENERIC_SAMPLING["top_k"]
    notes = " ".join(i.value for i in at.sidebar.info)
    assert "Sampling set to what untrained tiny recommends: cfg 1.5, top-k 0 (off)" in notes and "top-k 200" in notes
    assert "class was reset" in notes
    assert heading_scale(at) == (1, len(tiny.patch_nums))
    # back: the class list is the shapes list again, and shapes' own recommendation
    at.sidebar.selectbox(key="model_picker").set_value(SHAPES).run()
    assert at.selectbox(key=f"gen_class@{SHAPES}").options[0] == "0: red disc"
    assert at.number_input(key="gen_top_k").value == builtin.sampling_defaults("shapes")["top_k"]


def test_switching_to_cifar10_shows_its_class_names_at_once():
    at = new_app()
    assert at.selectbox(key=f"gen_class@{SHAPES}").options[0] == "0: red disc"
    at.sidebar.selectbox(key="model_picker").set_value("builtin:cifar10").run()
    assert_clean(at)
    picker = at.selectbox(key="gen_class@builtin:cifar10")
    assert picker.options[:3] == ["0: airplane", "1: automobile", "2: bird"] and picker.options[9] == "9: truck"
    assert not any("red disc" in option for option in picker.options)
    assert at.number_input(key="gen_top_k").value == builtin.sampling_defaults("cifar10")["top_k"] == 100


def test_a_model_switch_brings_the_new_models_guidance_and_reset_brings_it_back():
    """cfg 3 chosen on shapes does not stay on cifar10, whose card recommends 8: the switch applies cifar10's
    settings and says so; the widgets' help names them; "Reset to recommended" restores them after a change."""
    rec = builtin.sampling_defaults("cifar10")
    at = new_app()
    at.slider(key="gen_cfg").set_value(3.0).run()
    at.sidebar.selectbox(key="model_picker").set_value("builtin:cifar10").run()
    assert_clean(at)
    assert at.slider(key="gen_cfg").value == rec["cfg"] == 8.0
    assert (settings(at).cfg, settings(at).top_k, settings(at).top_p) == (rec["cfg"], rec["top_k"], rec["top_p"])
    assert any("cifar10 recommends: cfg 8" in i.value and "it was cfg 3" in i.value for i in at.sidebar.info)
    assert "Recommended for cifar10: 8." in at.slider(key="gen_cfg").help
    assert "Recommended for cifar10: 100." in at.number_input(key="gen_top_k").help
    assert at.button(key="gen_recommended").disabled
    at.slider(key="gen_cfg").set_value(2.0)
    at.number_input(key="gen_top_k").set_value(7).run()
    assert not at.button(key="gen_recommended").disabled
    at.button(key="gen_recommended").click().run()
    assert_clean(at)
    assert (at.slider(key="gen_cfg").value, at.number_input(key="gen_top_k").value) == (8.0, 100)
    assert settings(at).cfg == 8.0 and at.button(key="gen_recommended").disabled


# ------------------------------------------------------------------------------------------------ Generate
def test_step_controls_move_through_the_scales_and_everything_agrees():
    at = new_app()
    K = len(loaders.load_model(SHAPES).patch_nums)
    assert heading_scale(at) == (1, K)
    for k in range(2, K + 1):                      # every click counts; slider, heading and state agree
        at.button(key="gen_next").click().run()
        assert heading_scale(at)[0] == scale_slider(at).value == settings(at).scale == k
    assert at.button(key="gen_next").disabled
    at.button(key="gen_prev").click().run()
    assert heading_scale(at)[0] == scale_slider(at).value == K - 1
    scale_slider(at).set_value(3).run()
    assert heading_scale(at)[0] == scale_slider(at).value == 3
    at.button(key="gen_reset").click().run()
    assert heading_scale(at)[0] == 1 and at.button(key="gen_prev").disabled
    assert_clean(at)
    # the overview strip, the contribution, the decoded image and the mask (the token map is a clickable chart)
    assert len(at.image) == 4


def test_next_counts_from_the_servers_scale_not_the_browsers():
    """A browser that has not drawn the last step yet still shows the old slider; its stale value is ignored
    (the slider has a new key per scale) and Next goes one further than the server's scale."""
    at = new_app()
    at.button(key="gen_next").click().run()
    settings(at).scale = 3                                # as if another click had been handled meanwhile
    at.button(key="gen_next").click().run()
    assert heading_scale(at)[0] == scale_slider(at).value == 4


def test_play_advances_one_scale_per_tick_and_pause_stops():
    at = new_app()
    at.button(key="gen_play").click().run()
    assert settings(at).playing and at.button(key="gen_pause")
    settings(at).last_tick = time.monotonic() - 10     # as if the timer had fired
    at.run()
    assert heading_scale(at)[0] == scale_slider(at).value == 2
    at.button(key="gen_pause").click().run()
    assert not settings(at).playing
    assert_clean(at)


def test_play_stops_at_the_last_scale():
    at = new_app()
    K = len(loaders.load_model(SHAPES).patch_nums)
    scale_slider(at).set_value(K - 1).run()
    at.button(key="gen_play").click().run()
    settings(at).last_tick = time.monotonic() - 10
    at.run()
    assert heading_scale(at)[0] == K and not settings(at).playing
    assert at.button(key="gen_play")
    assert_clean(at)


def test_sampling_settings_change_the_generation():
    at = new_app()
    at.number_input(key="gen_seed").set_value(7).run()
    at.slider(key="gen_cfg").set_value(3.0).run()
    at.slider(key="gen_top_p").set_value(0.9).run()
    at.toggle(key="gen_smooth").set_value(True).run()
    at.selectbox(key=f"gen_class@{SHAPES}").set_value(1).run()
    assert_clean(at)
    model = loaders.load_model(SHAPES)
    run = traces.finished_generation(GenSettings(SHAPES, 1, 7, 3.0, int(at.number_input(key="gen_top_k").value),
                                                 0.9, True))
    assert len(run.steps) == len(model.patch_nums)
    assert run.image(len(run.steps) - 1, model).shape == (model.image_size, model.image_size, 3)


def test_inspector_shows_candidates_and_attention_per_layer_and_head():
    at = new_app()
    at.button(key="gen_next").click().run()
    at.session_state["gen_pick_tokens_1_1_1"] = {"selection": {"pick": [{"row": 0, "col": 1}]}}   # a click
    at.run()
    assert any("Position **(0, 1)**: chosen token" in m.value for m in at.markdown)
    at.toggle(key="gen_show_att").set_value(True).run()
    assert_clean(at)
    head = at.selectbox(key="gen_att_head")      # the figure's default, shown as the choice (not "Choose an option")
    assert head.index == 0 and head.options[0] == "mean over heads"
    at.selectbox(key="gen_att_layer").set_value(0).run()
    at.selectbox(key="gen_att_head").set_value(0).run()
    assert_clean(at)


def test_detailed_figures():
    at = new_app()
    n_images = len(at.image)
    for kind in ["tokens", "latents", "probability", "topk", "mask"]:
        at.segmented_control(key="gen_detail").set_value(kind).run()
        assert_clean(at)
        assert len(at.image) == n_images + 1, kind


def test_compare_mode_shows_two_settings_step_locked():
    at = new_app()
    single = len(at.image)
    at.toggle(key="gen_compare").set_value(True).run()
    at.number_input(key="gen_seed_b").set_value(3).run()
    at.slider(key="gen_cfg_b").set_value(4.0).run()
    at.button(key="gen_next").click().run()
    assert_clean(at)
    assert heading_scale(at)[0] == 2
    assert len(at.image) == single + 1 + 4     # B's strip and 3 panels; A's token map becomes a picture
    captions = [c for img in at.image for c in img.captions]
    assert any(c.startswith("A: decoded image after every scale") for c in captions)
    assert any(c.startswith("B: tokens r2") for c in captions)


def test_one_token_is_singular_in_the_heading():
    at = new_app()
    assert next(h.value for h in at.subheader if h.value.startswith("Scale 1 ")).startswith(
        "Scale 1 of 7: 1x1 = 1 token, predicted")


def mask_caption(at: AppTest) -> str:
    return next(c for img in at.image for c in img.captions if c.startswith("attention mask"))


def test_the_mask_caption_promises_only_what_can_be_seen():
    """At scale 1 the scale's one row is one pixel high and its one cell is the picked token's blue: no orange row."""
    at = new_app()
    assert "in orange" not in mask_caption(at) and "only query is the 1x1 token" in mask_caption(at)
    at.button(key="gen_next").click().run()
    assert "scale 2's rows in orange" in mask_caption(at)


def test_invalid_settings_are_refused_with_the_librarys_reason():
    tiny = loaders.load_model(registry.UNTRAINED_TINY)
    with pytest.raises(ValueError, match="cfg must be .*>= 0"):
        traces.validate(tiny, GenSettings(tiny.key, 0, 0, -1.0))
    with pytest.raises(ValueError, match="out of range"):
        traces.validate(tiny, GenSettings(tiny.key, 99, 0, 1.5))
    with pytest.raises(ValueError, match="top_k"):
        traces.validate(tiny, GenSettings(tiny.key, 0, 0, 1.5, top_k=10**6))


def test_missing_official_weights_are_explained():
    at = new_app(model_key="official:d16")          # not in the (empty) cache: the picker falls back
    assert_clean(at)
    assert settings(at).model_key == SHAPES

    def script():
        import streamlit as st

        from app import state, ui
        state.get("official:d16")
        ui.current_model()
        st.write("not reached")

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Could not load the model" in at.error[0].value
    assert "Models" in at.info[0].value


def test_a_broken_builtin_model_is_explained():
    def script():
        from app import state, ui
        state.get("builtin:no-such-model")
        ui.current_model()

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Could not load the model" in at.error[0].value


# ------------------------------------------------------------------------------------------------ traces
def tiny_model() -> loaders.LoadedModel:
    """A LoadedModel built here (not the server's cached one), so a test may count its calls."""
    preset = get_preset("tiny")
    torch.manual_seed(0)
    vqvae = VQVAE(preset.vqvae).eval()
    var = VAR(preset.var, vqvae).eval()
    var.init_weights()
    return loaders.LoadedModel("untrained:tiny", "tiny", vqvae, var, "", "", ("",) * var.num_classes)


def test_a_run_publishes_every_scale_and_decodes_a_prefix_once_when_asked(monkeypatch):
    model = tiny_model()
    run = TraceStore().run(GenSettings(model.key, 1, 3), model)
    assert run.done.wait(60) and run.error is None and run.complete
    assert [s.scale for s in run.steps] == list(range(len(model.patch_nums)))
    assert all(s._image is None and s.decoder is None for s in run.steps)      # nothing decoded yet
    reference = list(model.var.generate_steps([1], seed=3))
    for got, want in zip(run.steps, reference):
        assert torch.equal(got.tokens, want.tokens)
    calls = []
    decode = model.vqvae.decode_f_hat
    monkeypatch.setattr(model.vqvae, "decode_f_hat", lambda f: calls.append(1) or decode(f))
    first = run.image(2, model)
    again = run.image(2, model)
    assert len(calls) == 1 and first is again and first.shape == (model.image_size, model.image_size, 3)
    np.testing.assert_array_equal(first, traces.to_uint8(reference[2].image())[0])


def test_a_page_can_wait_for_the_first_scale_while_the_rest_are_computed():
    model = tiny_model()
    run = GenerationRun(GenSettings(model.key, 0, 0), model)
    assert not run.wait_for(1, 0.01)                   # nothing computed yet
    steps = model.var.generate_steps([0], seed=0)
    run.steps.append(next(steps).detached(decode=False))
    assert run.wait_for(1, 0.01) and not run.wait_for(2, 0.01) and not run.complete


def test_the_store_keeps_the_most_recent_runs_and_reuses_them():
    model = tiny_model()
    store = TraceStore(max_runs=2)
    runs = []
    for seed in range(3):
        runs.append(store.run(GenSettings(model.key, 0, seed), model))
        assert runs[-1].done.wait(60)
    assert len(store) == 2 and runs[0].evicted and not runs[2].evicted
    assert store.run(GenSettings(model.key, 0, 2), model) is runs[2]          # kept runs are reused
    assert store.run(GenSettings(model.key, 0, 0), model) is not runs[0]      # an evicted one is made again
    store.clear()
    assert len(store) == 0


# ------------------------------------------------------------------------------------------------ Encode
def test_encode_builtin_samples_step_by_step():
    at = new_app("views/encode.py")
    for sample in at.selectbox(key="enc_sample").options[:2] + ["photo: astronaut"]:
        at.selectbox(key="enc_sample").set_value(sample).run()
        assert_clean(at)
    K = at.slider(key="enc_scale").max
    at.slider(key="enc_scale").set_value(K).run()
    assert_clean(at)
    assert len(at.image) >= 7                  # input + 6 panels
    assert any("Rest left after this scale" in c.value for c in at.caption)


def test_encode_detailed_figures():
    at = new_app("views/encode.py")
    at.slider(key="enc_scale").set_value(2).run()
    n_images = len(at.image)
    for kind in ["tokens", "latents", "pyramid"]:
        at.segmented_control(key="enc_detail").set_value(kind).run()
        assert_clean(at)
        assert len(at.image) == n_images + 1, kind


@pytest.mark.parametrize("mode,size,notes", [("RGB", (80, 80), ["resized"]),
                                             ("L", (50, 30), ["converted from L", "centre-cropped"]),
                                             ("RGBA", (40, 64), ["converted from RGBA", "centre-cropped"])])
def test_encode_upload_is_converted_and_says_so(mode, size, notes):
    at = new_app("views/encode.py")
    at.radio(key="enc_source").set_value("Upload").run()
    assert "10 MB" in at.info[0].value                     # the limit is said before an upload, not only on hover
    at.file_uploader(key="enc_upload").set_value(("pic.png", png_bytes(mode, size), "image/png")).run()
    assert_clean(at)
    warnings = " ".join(w.value for w in at.warning)
    for note in notes:
        assert note in warnings


def test_encode_rejects_a_non_image_with_a_message_that_names_no_object():
    at = new_app("views/encode.py")
    at.radio(key="enc_source").set_value("Upload").run()
    at.file_uploader(key="enc_upload").set_value(("notes.png", b"this is not an image", "image/png")).run()
    assert not at.exception
    assert "not an image" in at.error[0].value and "0x" not in at.error[0].value


def test_image_input_limits():
    from app import inputs
    with pytest.raises(inputs.ImageInputError, match="limit is 10 MB"):
        inputs.read_image_bytes(b"\0" * (inputs.MAX_UPLOAD_MB * 1024 * 1024 + 1), "big.png")
    with pytest.raises(inputs.ImageInputError, match="not an image"):
        inputs.read_image_bytes(b"GIF89a garbage", "bad.gif")
    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, format="PNG")       # compresses to a few KB: a decompression bomb
    with pytest.raises(inputs.ImageInputError, match="megapixels"):
        inputs.read_image_bytes(huge.getvalue(), "huge.png")


# ------------------------------------------------------------------------------------------------ Edit
def test_edit_operations_show_before_and_after():
    at = new_app("views/edit.py")
    K = len(loaders.load_model(SHAPES).patch_nums)
    for op in ["inpaint", "outpaint", "class", "surgery"]:
        at.radio(key="edit_op").set_value(op).run()
        assert_clean(at)
        # before, region, after; kept-token masks and images per scale; the mask edits also show the keep mask
        # carried to every scale as it is painted
        assert len(at.image) == 3 + 2 * K + (K if op != "surgery" else 0), op
        captions = [c for img in at.image for c in img.captions]
        assert any(c.startswith("before") for c in captions) and "after" in captions


def test_edit_source_is_the_generate_pages_image():
    at = new_app()
    at.number_input(key="gen_seed").set_value(4).run()
    at.switch_page("views/edit.py").run()
    assert_clean(at)
    assert at.number_input(key="edit_src_seed").value == 4
    assert any("seed 4" in c.value for c in at.caption)


def test_edit_a_sample_and_an_upload_and_an_empty_box():
    at = new_app("views/edit.py")
    at.radio(key="edit_source").set_value("A sample image").run()
    assert_clean(at)
    at.slider(key="edit_rows").set_value((0.5, 0.5)).run()
    assert not at.exception
    assert "box is empty" in at.warning[0].value
    at.slider(key="edit_rows").set_value((0.0, 0.5)).run()
    at.radio(key="edit_source").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value(("p.png", png_bytes("RGBA", (30, 50)), "image/png")).run()
    assert_clean(at)
    assert any("RGBA" in w.value for w in at.warning)
    at.file_uploader(key="edit_upload").set_value(("p.png", b"nope", "image/png")).run()
    assert not at.exception
    assert "not an image" in at.error[0].value


def test_token_surgery_keeps_the_coarser_scales():
    model = loaders.load_model(SHAPES)
    source = GenSettings(SHAPES, 0, 0, model.default("cfg"), model.default("top_k"), model.default("top_p"))
    k = 2
    req = edits.EditRequest(SHAPES, "surgery", (0.0, 0.0, 1.0, 1.0), 0, 0, model.default("cfg"),
                            model.default("top_k"), model.default("top_p"), k, 5, source)
    res = edits.edit_result(req)
    before = traces.finished_generation(source).steps
    for i in range(k):
        np.testing.assert_array_equal(res.tokens[i], before[i].tokens[0].numpy())
    assert (res.tokens[k] == 5).all()


# ------------------------------------------------------------------------------------------------ Cost
def test_cost_page_counts_and_measures_and_says_which_settings():
    at = new_app("views/cost.py")
    assert_clean(at)
    assert len(at.metric) == 3
    captions = " ".join(c.value for c in at.caption)
    assert "Generate page" in captions and "0: red disc, seed 0, cfg 1.5" in captions
    at.button(key="cost_measure").click().run()
    assert_clean(at)
    assert "fresh generation" in " ".join(c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ Models
def test_models_page_describes_the_loaded_model():
    at = new_app("views/models.py")
    assert_clean(at)
    assert len(at.metric) == 3
    assert any("Weights from" in m.value for m in at.markdown)
    assert at.dataframe                                    # the official weights table


def test_models_page_download_failure_is_explained(monkeypatch):
    from varlite.download import DownloadError

    def offline(name, **kw):
        raise DownloadError(f"Could not download {name}: you seem to be offline.")

    monkeypatch.setattr(pretrained, "download_official", offline)
    at = new_app("views/models.py")
    at.button(key="models_download").click().run()
    assert not at.exception
    assert "offline" in at.error[0].value


def test_models_page_paths_outside_the_model_folder_are_refused_unread(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("VARLITE_HOME", str(home))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0")
    at = new_app("views/models.py")
    for typed in (str(secret), "../secret.txt", "/etc/passwd"):
        at.text_input(key="models_vae_path").set_value(typed).run()
        at.text_input(key="models_var_path").set_value("var_d16.pth").run()
        at.button(key="models_load_paths").click().run()
        assert not at.exception
        message = at.error[0].value
        assert "not in the model folder" in message and "root:x" not in message


def test_models_page_damaged_files_inside_the_folder_are_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path))
    (tmp_path / "vae.pth").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    (tmp_path / "var.pth").write_bytes(b"\x80\x02 nor this")
    at = new_app("views/models.py")
    at.text_input(key="models_vae_path").set_value("vae.pth").run()
    at.text_input(key="models_var_path").set_value("var.pth").run()
    at.button(key="models_load_paths").click().run()
    assert not at.exception
    assert "cannot be loaded" in at.error[0].value and "\\x" not in at.error[0].value


def test_a_broken_cached_official_file_is_named_and_can_be_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    for name in ("vae", "d16"):
        pretrained.official_path(name).write_bytes(rng.bytes(4096))
    at = new_app(model_key="official:d16")            # offered: both files are in the cache
    assert settings(at).model_key == "official:d16"
    assert "Could not load the model" in at.error[0].value and not at.exception
    at.switch_page("views/models.py").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert pretrained.official_path("vae").name in errors and "not a PyTorch checkpoint" in errors
    at.button(key="models_delete_vae").click().run()
    assert not pretrained.official_path("vae").exists() and pretrained.official_path("d16").exists()
    assert not at.exception
    assert "official:d16" not in at.sidebar.selectbox(key="model_picker").options
    assert settings(at).model_key == SHAPES


# ------------------------------------------------------------------------------------------------ official d16
def test_official_d16_switches_at_once_with_imagenet_names_and_streams(synthetic_official_home, monkeypatch):
    monkeypatch.setenv("VARLITE_HOME", str(synthetic_official_home))     # official-layout files (tests/conftest.py)
    at = new_app()
    at.selectbox(key=f"gen_class@{SHAPES}").set_value(1).run()
    at.sidebar.selectbox(key="model_picker").set_value("official:d16").run()
    assert_clean(at)
    names = imagenet.class_names()
    picker = at.selectbox(key="gen_class@official:d16")
    assert picker.value == 0 and picker.options[0] == "0: tench" and picker.options[207] == "207: golden retriever"
    assert len(picker.options) == 1001 and not any("red disc" in o for o in picker.options)
    assert names[0] == "tench"
    rerun_until(at, shows(1))                         # the first scale is shown (the page does not wait) ...
    assert heading_scale(at) == (1, 10)
    settings_ = GenSettings("official:d16", 0, 0, 4.0, 900, 0.95)
    run = traces.generation(settings_)
    assert run.steps[0].pn == 1
    rerun_until(at, lambda at: 0 in run.decoded() and "decoded so far" in [c for i in at.image for c in i.captions])
    decoded = run.decoded()
    assert set(decoded) == {0}                        # ... and only its prefix image was decoded
    assert not any("decoding the image" in c.value for c in at.caption)    # the image replaced the note in its place
    at.button(key="gen_next").click().run()           # the next scale: shown when computed, then decoded, once
    rerun_until(at, lambda at: shows(2)(at) and 1 in run.decoded())
    assert heading_scale(at) == (2, 10) and set(run.decoded()) == {0, 1}
    assert run.decoded()[0] is decoded[0]
    at.number_input(key="gen_seed").set_value(1).run()   # new settings: back to scale 1, where the new image streams
    assert_clean(at)
    assert settings(at).scale == 1
    rerun_until(at, shows(1))
    run = traces.generation(GenSettings("official:d16", 0, 1, 4.0, 900, 0.95))
    rerun_until(at, lambda at: 0 in run.decoded())
    assert set(run.decoded()) == {0}

    wished = []
    monkeypatch.setattr(traces, "want_image", lambda run, si, model: wished.append(si))    # nothing is decoded now:
    at.button(key="gen_next").click().run()
    rerun_until(at, shows(2))                         # the scale is drawn all the same, with a note where its image goes
    assert_clean(at)
    assert "contribution of this scale to f_hat" in [c for img in at.image for c in img.captions]
    assert any("decoding the image so far" in c.value for c in at.caption) and set(run.decoded()) == {0}
    assert wished and set(wished) == {1}              # the page asked for the image of the scale it shows
    traces.trace_store().clear()                      # stop the rest of the d16 generation
    loaders.reset_official()
