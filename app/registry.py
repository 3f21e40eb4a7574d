"""Which models the sidebar's picker offers, each named by a picker key.

A picker key names a model: ``builtin:<name>`` (shipped with varlite), ``official:d<depth>`` (official files in the
cache folder), ``path:<vae file>|<var file>`` (files a user named, resolved inside the model folders by
``varlite.pretrained.resolve_model_path``), ``run:<folder>`` (a ``train-var`` run inside the model folders),
``upload:<sha256 of the VAR file>[|<sha256 of the VQVAE file>]`` (weights uploaded on the Models page: a train-var
``checkpoint.pt``, or a VAR state_dict with its VQVAE state_dict), ``untrained:<preset>``. ``app/loaders.py``
loads the model of a key.

Runs and uploads loaded on the Models page join this session's picker (``own_models``, kept in
``st.session_state``); file pairs are kept in the session's settings (``Settings.custom_pairs``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.loaders import LoadedModel
from app.official_files import official_in_cache
from varlite import builtin, family
from varlite.core.configs import PRESETS

DEFAULT_MODEL = "builtin:shapes"
UNTRAINED_TINY = "untrained:tiny"
DEV_PRESETS = ("shapes", "cifar10", "d16")      # VARLITE_APP_DEV=1 offers untrained models of these presets
OWN_MODELS = "own_models"          # st.session_state key: {picker key: label} of the runs and uploads loaded here


@dataclass(frozen=True)
class ModelChoice:
    key: str
    label: str


def available_models(custom_pairs: list[tuple[str, str]] | None = None) -> list[ModelChoice]:
    """Every model the picker offers now: built-in ones, official ones in the cache, file pairs the user loaded,
    this session's own runs and uploads, and an untrained tiny model (always there: the walkthrough before any
    training)."""
    out = [ModelChoice(f"builtin:{n}", f"Built-in: {n}") for n in builtin.list_builtin()]
    out += [ModelChoice(f"official:d{d}", official_label(d)) for d in official_in_cache()]
    out += [ModelChoice(f"path:{vae}|{var}", f"From files: {Path(var).name}") for vae, var in custom_pairs or []]
    out += [ModelChoice(key, label) for key, label in own_models().items()]
    out.append(ModelChoice(UNTRAINED_TINY, "Untrained tiny (random weights)"))
    if os.environ.get("VARLITE_APP_DEV"):      # offline checks of the app with other configs (untrained weights)
        out += [ModelChoice(f"untrained:{p}", f"Untrained {p} (random weights, dev)") for p in DEV_PRESETS
                if p in PRESETS]
    return out


def official_label(depth: int) -> str:
    """'Official VAR-d16 (ImageNet 256 px): 310 M parameters, needs ~2.8 GB, ~4 s per image': what choosing it costs
    (``varlite.family.official_footprint``, from the config alone: nothing is read)."""
    footprint = family.official_footprint(depth)
    return (f"Official VAR-d{depth} (ImageNet {footprint.image_size} px): {footprint.var_params / 1e6:,.0f} M "
            f"parameters, needs ~{footprint.memory_bytes / 2**30:.1f} GB, ~{footprint.seconds_per_image:.0f} s per "
            f"image")


def own_models() -> dict[str, str]:
    """{picker key: label} of the training runs and uploads this session loaded on the Models page."""
    return st.session_state.setdefault(OWN_MODELS, {})


def remember_own_model(model: LoadedModel, label: str) -> None:
    """Offer ``model`` in this session's picker from now on, under ``label``."""
    own_models()[model.key] = label
