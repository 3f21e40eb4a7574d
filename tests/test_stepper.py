"""The notebook stepper (varlite.stepper): its widget driven from Python as a learner would (slider, buttons,
position, the sampler's controls), and its static alternative where widgets cannot be shown."""
from __future__ import annotations

import pytest
import torch

from varlite import exercises as ex
from varlite import stepper
from varlite.data import Shapes, to_pm1

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def models():
    return ex.lesson_models("shapes", verbose=False)


@pytest.fixture(scope="module")
def generation(models):
    return list(models[1].generate_steps([3], cfg=1.5, seed=0))


@pytest.fixture
def titles_not_pixels(monkeypatch):
    """The widget shows each figure's title instead of its PNG: which figure is shown, without rasterizing it
    (slow on a loaded CI machine; one test below keeps the real PNG)."""
    def title_of(fig, dpi):
        return (fig._suptitle.get_text() if fig._suptitle is not None else fig.axes[0].get_title()).encode()
    monkeypatch.setattr(stepper, "png_bytes", title_of)


def shown_text(image) -> str:
    return bytes(image.value).decode()


def test_the_widget_shows_the_scale_figure_as_png(models, generation):
    shown = stepper.ScaleStepper(generation, models[0].quantize.embedding.weight, images=False)
    first = bytes(shown.image.value)
    shown.slider.value = 4
    assert bytes(shown.image.value).startswith(b"\x89PNG") and bytes(shown.image.value) != first


def test_the_slider_and_the_buttons_choose_the_scale_shown(models, generation, titles_not_pixels):
    shown = stepper.ScaleStepper(generation, models[0].quantize.embedding.weight)
    K = len(generation)
    assert shown.scale == 0 and "Scale 1 of" in shown.title.value and shown_text(shown.image).startswith("Scale 1 ")
    shown.slider.value = 4
    assert shown.scale == 3 and f"Scale 4 of {K}" in shown.title.value
    assert shown_text(shown.image).startswith(f"Scale 4 of {K}: {generation[3].pn}x{generation[3].pn} tokens")
    shown.next.click()
    assert shown.scale == 4 and f"a {generation[4].pn}x{generation[4].pn} token map" in shown.title.value
    assert shown_text(shown.image).startswith(f"Scale 5 of {K}")
    shown.slider.value = K
    shown.next.click()                              # past the last scale: stays there
    assert shown.scale == K - 1
    shown.previous.click()
    assert shown.scale == K - 2 and shown_text(shown.image).startswith(f"Scale {K - 1} of {K}")


def test_the_candidates_follow_the_position_and_the_scale(models, generation, titles_not_pixels):
    shown = stepper.ScaleStepper(generation, models[0].quantize.embedding.weight, images=False)
    last = generation[-1]
    shown.slider.value = len(generation)
    assert shown_text(shown.candidates).startswith(f"Scale {last.pn}x{last.pn}, position (0, 0): chose "
                                                   f"{int(last.tokens[0, 0, 0])} ")
    shown.row.value, shown.col.value = 5, 2
    assert shown_text(shown.candidates).startswith(f"Scale {last.pn}x{last.pn}, position (5, 2): chose "
                                                   f"{int(last.tokens[0, 5, 2])} ")
    shown.slider.value = 2                           # a 2x2 map: the position is clipped to (1, 1)
    assert shown_text(shown.candidates).startswith("Scale 2x2, position (1, 1): chose")


def test_generate_reruns_the_library_loop_with_the_controls_values(models, titles_not_pixels):
    shown = stepper.generation_stepper(models[1], label=3, cfg=1.5, seed=0)
    shown.controls["label"].value, shown.controls["seed"].value, shown.controls["top_k"].value = 1, 7, 1
    shown.generate.click()
    expected = list(models[1].generate_steps([1], cfg=1.5, top_k=1, seed=7))
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(shown.steps, expected))


def test_an_encoding_shows_the_rest_and_no_candidates(models, titles_not_pixels):
    vqvae = models[0]
    image = to_pm1(Shapes(n=10, split="test").images_u8[:1])
    steps = list(vqvae.encode_steps(image))
    shown = stepper.ScaleStepper(steps, vqvae.quantize.embedding.weight)
    assert not shown.generation and not hasattr(shown, "candidates")
    figure = shown.figure(2)
    assert any("rest ||f - f_hat||" in ax.get_title() for ax in figure.axes)


def test_steps_out_of_order_are_refused(models, generation):
    with pytest.raises(ValueError, match="scales 1..K in order"):
        stepper.ScaleStepper(generation[1:], models[0].quantize.embedding.weight)


def test_the_output_carries_the_widget_and_a_static_view_of_every_scale(models, generation):
    bundle = stepper.ScaleStepper(generation, models[0].quantize.embedding.weight)._repr_mimebundle_()
    assert WIDGET_VIEW in bundle            # JupyterLab shows this; nbconvert and previews the HTML below
    html = bundle["text/html"]
    assert html.count("<img") == 1 and "data:image/png;base64," in html and "Static view: every scale" in html


def test_without_ipywidgets_the_static_view_is_all_there_is(models, generation, monkeypatch):
    monkeypatch.setattr(stepper, "widgets", None)
    shown = stepper.ScaleStepper(generation, models[0].quantize.embedding.weight, images=False)
    assert shown.widget is None
    bundle = shown._repr_mimebundle_()
    assert WIDGET_VIEW not in bundle and "data:image/png;base64," in bundle["text/html"]
    overview = stepper.viz.scales_overview_figure(generation, models[0].quantize.embedding.weight, image=False)
    assert [ax.get_title() for ax in overview.axes[:len(generation)]] == [
        f"k={s.scale + 1}: {s.pn}x{s.pn}" for s in generation]
