"""Deep links: the Generate page's view lives in the page's address, so that a link opens the same view.

The parameters (every one optional; ``st.query_params``):
  model            a key of the sidebar's list, e.g. ``builtin:cifar10`` or ``official:d16``
  class, seed      the class (the last one is unconditional) and the seed of setting A
  cfg, top_k, top_p, smooth (0 or 1)   the sampling settings
  scale            the scale shown, 1..K
  pick             ``row,col``: the token picked on that scale
  compare=1 with class_b, seed_b, cfg_b   the second setting, side by side
e.g. ``/generate?model=builtin:shapes&class=3&seed=7&cfg=2&scale=5&pick=2,3`` ("look at scale 5 here").

``write`` puts the session's settings in the address on every run of the Generate page (the browser's address bar
changes; nothing reruns). ``restore`` reads the address once per session, after the model is adopted, and takes every
value it can use; a value it cannot (not a number, outside what the model takes) is named in a note with what is used
instead. A link never raises.
"""
from __future__ import annotations

import math

import streamlit as st

from app import state
from app.loaders import LoadedModel

FIELDS = {"class": "label", "seed": "seed", "cfg": "cfg", "top_k": "top_k", "top_p": "top_p", "scale": "scale",
          "class_b": "label_b", "seed_b": "seed_b", "cfg_b": "cfg_b"}       # number parameters -> Settings fields
SWITCHES = {"smooth": "smooth", "compare": "compare"}                       # 0 / 1 parameters -> Settings fields
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _ranges(model: LoadedModel) -> dict[str, tuple[type, float, float]]:
    """(int or float, lowest, highest) of every number parameter: what the page's controls take for this model."""
    classes = (int, 0, model.num_classes)
    seeds = (int, 0, state.SEED_MAX)
    cfgs = (float, *state.CFG_RANGE)
    return {"class": classes, "seed": seeds, "cfg": cfgs, "top_k": (int, 0, model.vocab_size),
            "top_p": (float, 0.0, 1.0), "scale": (int, 1, len(model.patch_nums)),
            "class_b": classes, "seed_b": seeds, "cfg_b": cfgs}


def _shown(text: str) -> str:
    """A value from the address as inline code (at most 40 characters, no backticks)."""
    text = text.replace("`", "")
    return f"`{text[:40]}{'...' if len(text) > 40 else ''}`"


def _number(text: str, kind: type, low: float, high: float) -> int | float | None:
    """``text`` read as ``kind`` (int: digits only) within [low, high]; None when it is not."""
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def _words(model: LoadedModel, name: str, value) -> str:
    return model.class_label(value) if name.startswith("class") else f"{name} {value:g}"


def requested_model(keys: list[str], default_label: str) -> tuple[str | None, list[str]]:
    """(the link's model if it is one of ``keys``, a note when the link names another)."""
    key = st.query_params.get("model")
    if key is None or key in keys:
        return key, []
    return None, [f"The link's model {_shown(key)} is not offered on this server (an official model appears once its "
                  f"weights are in the model folder): showing {default_label} instead."]


def restore(model: LoadedModel) -> list[str]:
    """Take the link's settings (see the module docstring) into the session's settings; returns a note per value
    that could not be used."""
    s = state.get()
    params, notes = st.query_params, []
    for name, field in SWITCHES.items():
        if name in params:
            text = params[name].strip().lower()
            if text in TRUE + FALSE:
                setattr(s, field, text in TRUE)
            else:
                notes.append(f"The link's {name}={_shown(params[name])} is not 0 or 1: {name} stays "
                             f"{'on' if getattr(s, field) else 'off'}.")
    for name, (kind, low, high) in _ranges(model).items():
        if name not in params:
            continue
        value = _number(params[name], kind, low, high)
        if value is None:
            what = "a whole number" if kind is int else "a number"
            notes.append(f"The link's {name}={_shown(params[name])} is not {what} from {low:g} to {high:g}: using "
                         f"{_words(model, name, getattr(s, FIELDS[name]))} instead.")
        else:
            setattr(s, FIELDS[name], value)
    if "pick" in params:
        notes += _restore_pick(model, params["pick"])
    return notes


def _restore_pick(model: LoadedModel, text: str) -> list[str]:
    """``pick=row,col``: the token (row, col) of the scale shown; a note when it is not one of that scale."""
    s = state.get()
    side = model.patch_nums[s.scale - 1]
    parts = text.split(",")
    cell = [_number(p, int, 0, side - 1) for p in parts] if len(parts) == 2 else [None]
    if None in cell:
        row, col = s.position(side)
        return [f"The link's pick={_shown(text)} is not a token row,col of scale {s.scale} ({side}x{side}: each "
                f"from 0 to {side - 1}): using ({row}, {col}) instead."]
    s.pick(cell[0], cell[1], side)
    return []


def write(model: LoadedModel) -> None:
    """Put the session's Generate settings in the page's address (replacing what was there)."""
    s = state.get()
    row, col = s.position(model.patch_nums[s.scale - 1])
    params = {"model": s.model_key, "class": str(s.label), "seed": str(s.seed), "cfg": f"{s.cfg:g}",
              "top_k": str(s.top_k), "top_p": f"{s.top_p:g}", "smooth": str(int(s.smooth)), "scale": str(s.scale),
              "pick": f"{row},{col}"}
    if s.compare:
        params.update(compare="1", class_b=str(s.label_b), seed_b=str(s.seed_b), cfg_b=f"{s.cfg_b:g}")
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
