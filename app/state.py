"""One settings object per browser session, shared by every page: the model, the sampling settings, the scale.

Streamlit forgets a keyed widget's value when a page that does not draw it runs, so no page reads another page's
widget keys. Every control is drawn by ``bound(...)`` instead: its value is put back from the settings object
before the widget is drawn and copied into the object by the widget's ``on_change`` callback (callbacks run before
the script, so the page always draws from the new value). The object lives in ``st.session_state["settings"]``.

When the model changes, ``adopt_model`` resets what belongs to the old model at once (class, scale, inspected
position, the other pages' controls) and sets the sampling settings (cfg, top-k, top-p) to the new model's
recommendation (its card's, ``varlite.builtin.sampling_defaults``; the official demo's for official models,
``varlite.pretrained.DEMO_SAMPLING``), with a note saying so when they change: guidance chosen for one model is no
guide for another (shapes looks best at cfg 1.5, cifar10 at 8). ``use_recommended`` puts them back on request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from app.loaders import LoadedModel

SAMPLING_FIELDS = ("cfg", "top_k", "top_p")
SEED_MAX = 2**31 - 1                  # the seed control's range is 0..SEED_MAX
CFG_RANGE = (0.0, 8.0)               # the guidance sliders' range


@dataclass
class Settings:
    model_key: str                       # the model picked in the sidebar
    adopted_key: str | None = None       # the model the per-model fields below belong to
    label: int = 0                       # class of setting A (num_classes = unconditional)
    seed: int = 0
    cfg: float = 1.5                     # classifier-free guidance strength
    top_k: int = 0
    top_p: float = 0.0
    smooth: bool = False
    compare: bool = False                # Generate: show setting B beside A
    label_b: int = 0
    seed_b: int = 1
    cfg_b: float = 1.5
    scale: int = 1                       # Generate: the scale shown, k = 1..K
    playing: bool = False
    last_tick: float = 0.0               # Generate: time.monotonic() of the last Play step
    generated: tuple = ()                # Generate: the GenSettings (A, and B if shown) the page last showed
    drawn: tuple = ()                    # Generate: what the step viewer's picture was drawn from (its watcher's cue)
    pick_y: float = 0.5                  # Generate: the inspected point, as fractions of the image (row, column);
    pick_x: float = 0.5                  # each scale inspects the token whose cell contains it (``position``)
    view: dict[str, Any] = field(default_factory=dict)    # the other pages' controls, by widget key
    custom_pairs: list[tuple[str, str]] = field(default_factory=list)   # (vae, var) files loaded on the Models page
    notes: list[str] = field(default_factory=list)        # what the last model change (or the link) changed
    linked: bool = False                 # the page's link (its query parameters) was read: once per session

    def position(self, side: int) -> tuple[int, int]:
        """(row, col) of the token of a side x side scale whose cell contains the picked point: the same image
        area on every scale (a click at scale k stays selected, on the new grid, at scale k+1)."""
        return min(int(self.pick_y * side), side - 1), min(int(self.pick_x * side), side - 1)

    def pick(self, row: int, col: int, side: int) -> None:
        """Pick the token (row, col) of a side x side scale: the point becomes that cell's centre."""
        self.pick_y, self.pick_x = (row + 0.5) / side, (col + 0.5) / side

    def sampling(self, b: bool = False) -> dict:
        """The generation settings of A (or B, which shares A's top-k, top-p and smoothing)."""
        return dict(label=self.label_b if b else self.label, seed=self.seed_b if b else self.seed,
                    cfg=self.cfg_b if b else self.cfg, top_k=self.top_k, top_p=self.top_p, smooth=self.smooth)


def get(default_model: str | None = None) -> Settings:
    """This session's settings (created on first use, picking ``default_model``)."""
    ss = st.session_state
    if "settings" not in ss:
        ss["settings"] = Settings(model_key=default_model or "")
    return ss["settings"]


def recommended(model: LoadedModel) -> dict:
    """The model's recommended sampling settings: {"cfg": float, "top_k": int, "top_p": float}."""
    return {name: model.default(name) for name in SAMPLING_FIELDS}


def sampling_words(values: dict) -> str:
    """'cfg 4, top-k 900, top-p 0.95' ('(off)' after a filter at 0)."""
    return (f"cfg {values['cfg']:g}, top-k {values['top_k']}{' (off)' if values['top_k'] == 0 else ''}, "
            f"top-p {values['top_p']:g}{' (off)' if values['top_p'] == 0 else ''}")


def use_recommended(model: LoadedModel) -> None:
    """Set cfg (of A and B), top-k and top-p to the model's recommendation."""
    s = get()
    for name, value in recommended(model).items():
        setattr(s, name, value)
    s.cfg_b = s.cfg


def adopt_model(model: LoadedModel) -> None:
    """Make the settings belong to ``model`` (a no-op when they already do); see the module docstring."""
    s = get()
    if s.adopted_key == model.key:
        return
    first = s.adopted_key is None
    before = {name: getattr(s, name) for name in SAMPLING_FIELDS}
    use_recommended(model)
    notes = []
    if not first and before != recommended(model):
        notes.append(f"Sampling set to what {model.name} recommends: {sampling_words(recommended(model))} "
                     f"(it was {sampling_words(before)}).")
    if not first and (s.label, s.label_b) != (0, 0):
        notes.append(f"The class was reset to {model.class_label(0)} (classes differ between models).")
    s.label = s.label_b = 0
    s.scale, s.playing, s.pick_y, s.pick_x = 1, False, 0.5, 0.5
    s.view.clear()
    s.notes = notes
    s.adopted_key = s.model_key = model.key


def bound(widget: Callable, label: str, key: str, *, field: str | None = None, default: Any = None,
          **kwargs) -> Any:
    """Draw ``widget(label, key=key, **kwargs)`` bound to ``settings.<field>`` (or, without a field, to
    ``settings.view[key]``, starting at ``default``) and return its value. A stored value that is not among the
    widget's ``options`` falls back to ``default`` (or the first option)."""
    s = get()
    value = getattr(s, field) if field else s.view.setdefault(key, default)
    options = kwargs.get("options")
    if options is not None and not isinstance(value, list) and value not in list(options):
        value = default if default in list(options) else list(options)[0]
    _store(s, key, field, value)
    st.session_state[key] = value
    return widget(label, key=key, on_change=_copy_back, args=(key, field), **kwargs)


def _store(s: Settings, key: str, field: str | None, value: Any) -> None:
    if field:
        setattr(s, field, value)
    else:
        s.view[key] = value


def _copy_back(key: str, field: str | None) -> None:
    s = get()
    if "@" in key and key.rsplit("@", 1)[1] != s.model_key:
        return     # a widget of the previous model (a class picked just before the switch): not this model's value
    _store(s, key, field, st.session_state[key])
