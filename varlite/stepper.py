"""Step through the scales of a generation or an encoding in a notebook: a scale slider with Previous / Next buttons
over the records of ``VAR.generate_steps`` (``ScaleStep``) or ``VQVAE.encode_steps`` (``EncodeStep``), each scale
drawn by ``varlite.viz.scale_figure``. For a generation it also shows the most likely tokens at a chosen position
(``viz.topk_figure``), and ``generation_stepper`` adds controls for the class, guidance, top-k, top-p and seed that
rerun ``VAR.generate_steps``. The stepper has no model loop of its own: what it shows are the library's records.

Where a widget cannot be shown -- ipywidgets not installed, or a page without a widget frontend (nbconvert's HTML,
GitHub's preview of a saved notebook, a headless test run) -- the stepper's output carries a static alternative: the
figures of every scale at once, as HTML. A Jupyter output holds several formats and each frontend shows the richest it
can: JupyterLab and VS Code the widget, nbconvert (which drops widget views without saved widget state) and plain
viewers the HTML.
"""
from __future__ import annotations

import base64
import io
from typing import Callable, Sequence

import torch
from matplotlib.figure import Figure

from . import viz

try:                                    # optional: without it the stepper shows its static figures only
    import ipywidgets as widgets
except ImportError:                     # pragma: no cover - depends on the environment
    widgets = None

WIDGET_DPI = 80                         # the figure shown in the widget
STATIC_DPI = 72                         # the static alternative: all scales in one figure
NUM_CANDIDATES = 5                      # tokens in the candidates chart


def png_bytes(fig: Figure, dpi: int) -> bytes:
    """The figure as PNG bytes (no pyplot: the figure is drawn by its own canvas)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class ScaleStepper:
    """One generation's (or encoding's) scales, shown one at a time.

    ``steps``: the records of every scale, coarse to fine (row ``b`` is shown); ``codebook_VCv``: the codebook that
    colours the token maps; ``images``: draw the image decoded after each scale (False where decoding is too slow,
    e.g. the official d16 on a CPU); ``regenerate``: optional, a function of the controls' values (label, cfg,
    top_k, top_p, seed) returning new steps (see ``generation_stepper``).

    The widget's parts are attributes, so code (and tests) can drive it as a learner would: ``slider`` (the 1-based
    scale k), ``previous`` / ``next`` buttons, ``title``, ``image`` (the shown figure as PNG), and for a generation
    ``row`` / ``col`` and ``candidates`` (the top-k chart at that position); ``controls`` and ``generate`` when
    ``regenerate`` is given. ``widget`` is None when ipywidgets is not installed.
    """

    def __init__(self, steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0, images: bool = True,
                 regenerate: Callable[..., Sequence] | None = None, settings: dict | None = None):
        self.codebook_VCv, self.b, self.images = codebook_VCv, b, images
        self.steps = self._checked(steps)
        self.regenerate = regenerate
        self.widget = None if widgets is None else self._build(settings or {})

    @staticmethod
    def _checked(steps: Sequence) -> list:
        steps = list(steps)
        if not steps:
            raise ValueError("the stepper needs at least one scale's record (got no steps)")
        if [step.scale for step in steps] != list(range(len(steps))):
            raise ValueError(f"the steps must be scales 1..K in order; got scales "
                             f"{[step.scale + 1 for step in steps]}")
        return steps

    @property
    def generation(self) -> bool:
        """Whether the steps are a generation's (they have logits, so candidates can be shown)."""
        return hasattr(self.steps[0], "logits")

    # ------------------------------------------------------------------ what is drawn
    def figure(self, si: int) -> Figure:
        """The figure of scale si (0-based): ``viz.scale_figure``."""
        return viz.scale_figure(self.steps[si], self.codebook_VCv, self.b, image=self.images)

    def candidates_figure(self, si: int, row: int, col: int) -> Figure:
        """The most likely tokens at (row, col) of scale si (clipped to that scale's map): ``viz.topk_figure``."""
        step = self.steps[si]
        return viz.topk_figure(step, min(row, step.pn - 1), min(col, step.pn - 1), self.b, NUM_CANDIDATES)

    def static_html(self) -> str:
        """Every scale at once (``viz.scales_overview_figure``) as HTML with an embedded PNG, and a note: the output
        shown where widgets are not."""
        overview = viz.scales_overview_figure(self.steps, self.codebook_VCv, self.b, image=self.images)
        encoded = base64.b64encode(png_bytes(overview, STATIC_DPI)).decode("ascii")
        note = ("Static view: every scale at once. Opened in JupyterLab with ipywidgets installed, this output is a "
                "stepper (a scale slider, Previous / Next, the candidates at a position).")
        return (f'<div class="varlite-stepper"><p>{note}</p>'
                f'<img alt="every scale" src="data:image/png;base64,{encoded}"/></div>')

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        data = {"text/plain": f"ScaleStepper over {len(self.steps)} scales", "text/html": self.static_html()}
        if self.widget is not None:
            data.update(self.widget._repr_mimebundle_())
        return data

    # ------------------------------------------------------------------ the widget
    @property
    def scale(self) -> int:
        """The 0-based index si of the scale shown."""
        return self.slider.value - 1

    def _build(self, settings: dict):
        K = len(self.steps)
        self.slider = widgets.IntSlider(value=1, min=1, max=K, description="scale k", continuous_update=False)
        self.previous = widgets.Button(description="Previous", icon="arrow-left")
        self.next = widgets.Button(description="Next", icon="arrow-right")
        self.title = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.previous.on_click(lambda _: self._move(-1))
        self.next.on_click(lambda _: self._move(+1))
        self.slider.observe(lambda _: self._draw(), names="value")
        parts = [widgets.HBox([self.previous, self.slider, self.next]), self.title, self.image]
        if self.generation:
            self.row = widgets.BoundedIntText(value=0, min=0, max=self.steps[-1].pn - 1, description="row")
            self.col = widgets.BoundedIntText(value=0, min=0, max=self.steps[-1].pn - 1, description="column")
            self.candidates = widgets.Image(format="png")
            for box in (self.row, self.col):
                box.observe(lambda _: self._draw_candidates(), names="value")
            parts += [widgets.HTML("<b>Candidates at one position</b> (the drawn token in orange; the position is "
                                   "clipped to the scale's map):"), widgets.HBox([self.row, self.col]),
                      self.candidates]
        if self.regenerate is not None:
            parts = [self._build_controls(settings)] + parts
        self._draw()
        return widgets.VBox(parts)

    def _build_controls(self, settings: dict):
        self.controls = {
            "label": widgets.BoundedIntText(value=settings["label"], min=0, max=settings["num_classes"] - 1,
                                            description="class"),
            "cfg": widgets.FloatSlider(value=settings["cfg"], min=0.0, max=8.0, step=0.5, description="cfg",
                                       continuous_update=False),
            "top_k": widgets.BoundedIntText(value=settings["top_k"], min=0, max=settings["vocab_size"],
                                            description="top-k (0 off)"),
            "top_p": widgets.FloatSlider(value=settings["top_p"], min=0.0, max=1.0, step=0.01,
                                         description="top-p (0 off)", continuous_update=False),
            "seed": widgets.IntText(value=settings["seed"], description="seed"),
        }
        self.generate = widgets.Button(description="Generate", button_style="primary")
        self.generate.on_click(lambda _: self._regenerate())
        return widgets.VBox([widgets.HBox(list(self.controls.values())[:3]),
                             widgets.HBox(list(self.controls.values())[3:] + [self.generate])])

    def _move(self, delta: int) -> None:
        self.slider.value = min(max(self.slider.value + delta, 1), len(self.steps))

    def _draw(self) -> None:
        step = self.steps[self.scale]
        self.title.value = (f"<b>Scale {step.scale + 1} of {step.num_scales}</b>: a {step.pn}x{step.pn} token map "
                            f"({step.pn * step.pn} tokens)")
        self.image.value = png_bytes(self.figure(self.scale), WIDGET_DPI)
        if self.generation:
            self._draw_candidates()

    def _draw_candidates(self) -> None:
        self.candidates.value = png_bytes(self.candidates_figure(self.scale, self.row.value, self.col.value),
                                          WIDGET_DPI)

    def _regenerate(self) -> None:
        values = {name: control.value for name, control in self.controls.items()}
        self.steps = self._checked(self.regenerate(**values))
        self.slider.max = len(self.steps)
        self._draw()


def generation_stepper(var, label: int = 0, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                       images: bool = True) -> ScaleStepper:
    """A stepper over ``var.generate_steps([label], cfg=..., top_k=..., top_p=..., seed=...)`` with controls for
    those five settings and a Generate button that reruns the generation with the values set."""
    def regenerate(label, cfg, top_k, top_p, seed):
        return list(var.generate_steps([label], cfg=cfg, top_k=top_k, top_p=top_p, seed=seed))

    settings = {"label": label, "cfg": cfg, "top_k": top_k, "top_p": top_p, "seed": seed,
                "num_classes": var.num_classes, "vocab_size": var.config.vocab_size}
    return ScaleStepper(regenerate(label, cfg, top_k, top_p, seed), var.vqvae.quantize.embedding.weight,
                        images=images, regenerate=regenerate, settings=settings)
