"""Which models the picker offers, and loading them once per server.

A picker key names a model: ``builtin:<name>`` (shipped with varlite), ``official:d<depth>`` (official files in the
cache folder), ``path:<vae file>|<var file>`` (files a user named, resolved inside the model folders by
``varlite.pretrained.resolve_model_path``), ``untrained:<preset>``.

Memory bound (issue 14 item 8): ``st.cache_resource`` keeps at most one model per kind -- one official model, one
pair of files, two built-in models (each a few MB) and two untrained ones -- shared by every session. Loading a
second official model evicts the first. Sharing is safe: generation keeps its KV cache in an object owned by the
call, never in the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

from varlite import builtin, imagenet, pretrained
from varlite.configs import PRESETS, get_preset
from varlite.data import cifar10, shapes
from varlite.var import VAR
from varlite.vqvae import VQVAE

DEFAULT_MODEL = "builtin:shapes"
UNTRAINED_TINY = "untrained:tiny"
OFFICIAL_DEPTHS = (16, 20, 24, 30)
DEV_PRESETS = ("shapes", "cifar10", "d16")      # VARLITE_APP_DEV=1 offers untrained models of these presets
GENERIC_SAMPLING = {"cfg": 1.5, "top_k": 0, "top_p": 0.0}
CLASS_NAMES = {"shapes": shapes.CLASS_NAMES, "cifar10": cifar10.CLASSES}


@dataclass(frozen=True)
class ModelChoice:
    key: str
    label: str


def official_in_cache() -> list[int]:
    """Depths whose VAR file and the shared VAE file are both in the cache folder (whether or not they load)."""
    if not pretrained.official_path("vae").exists():
        return []
    return [d for d in OFFICIAL_DEPTHS if pretrained.official_path(f"d{d}").exists()]


def available_models(custom_pairs: list[tuple[str, str]] | None = None) -> list[ModelChoice]:
    """Every model the picker offers now: built-in ones, official ones in the cache, file pairs the user loaded,
    and an untrained tiny model (always there: the walkthrough before any training)."""
    out = [ModelChoice(f"builtin:{n}", f"Built-in: {n}") for n in builtin.list_builtin()]
    out += [ModelChoice(f"official:d{d}", f"Official VAR-d{d} (ImageNet 256)") for d in official_in_cache()]
    out += [ModelChoice(f"path:{vae}|{var}", f"From files: {Path(var).name}") for vae, var in custom_pairs or []]
    out.append(ModelChoice(UNTRAINED_TINY, "Untrained tiny (random weights)"))
    if os.environ.get("VARLITE_APP_DEV"):      # offline checks of the app with other configs (untrained weights)
        out += [ModelChoice(f"untrained:{p}", f"Untrained {p} (random weights, dev)") for p in DEV_PRESETS
                if p in PRESETS]
    return out


@dataclass
class LoadedModel:
    key: str
    name: str
    vqvae: VQVAE
    var: VAR
    source: str                   # where the weights came from, in words
    verified: str                 # how they were checked, in words
    class_names: tuple[str, ...]  # one per class; "" where unknown
    card: str = ""                # markdown model card (built-in models)
    files: list[str] = field(default_factory=list)
    sampling: dict = field(default_factory=dict)   # recommended cfg / top_k / top_p

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return tuple(self.var.patch_nums)

    @property
    def image_size(self) -> int:
        return self.vqvae.config.image_size

    @property
    def num_classes(self) -> int:
        return self.var.num_classes

    @property
    def vocab_size(self) -> int:
        return self.var.config.vocab_size

    @property
    def device(self) -> torch.device:
        """Where the weights are (the loaders pick a GPU when there is one); inputs are moved here."""
        return self.var.lvl_1L.device

    def class_label(self, i: int) -> str:
        """'3: cat'; 'class 3' when the name is unknown; the last label is 'unconditional'."""
        if i == self.num_classes:
            return f"{i}: unconditional"
        name = self.class_names[i] if i < len(self.class_names) else ""
        return f"{i}: {name}" if name else f"class {i}"

    def default(self, name: str):
        """The recommended sampling setting ``cfg``, ``top_k`` or ``top_p`` (top_k capped at V)."""
        value = self.sampling.get(name, GENERIC_SAMPLING[name])
        return min(int(value), self.vocab_size) if name == "top_k" else float(value)

    def param_counts(self) -> dict[str, int]:
        return {"VQVAE (tokenizer)": sum(p.numel() for p in self.vqvae.parameters()),
                "VAR (transformer)": sum(p.numel() for p in self.var.parameters())}


def _source_words(var: VAR, default: str) -> tuple[str, str]:
    """(where from, how verified) from the ``source`` record the loaders attach, if any."""
    src = getattr(var, "source", None)
    if isinstance(src, dict):
        verified = ("verified: every tensor name and shape matches the expected layout" if src.get("verified")
                    else "not verified")
        return f"{src.get('what', default)} (layout: {src.get('layout', '?')})", verified
    return default, "not verified"


@st.cache_resource(show_spinner="Building the untrained model...", max_entries=2)
def _load_untrained(preset_name: str) -> LoadedModel:
    torch.manual_seed(0)
    preset = get_preset(preset_name)
    vqvae = VQVAE(preset.vqvae).eval()
    var = VAR(preset.var, vqvae).eval()
    var.init_weights()
    names = CLASS_NAMES.get(preset_name, ())
    return LoadedModel(f"untrained:{preset_name}", f"untrained {preset_name}", vqvae, var,
                       f"random initialisation of the `{preset_name}` preset (seed 0)", "nothing to verify",
                       tuple(names) if len(names) == var.num_classes else ("",) * var.num_classes)


@st.cache_resource(show_spinner="Loading the built-in model (once per server)...", max_entries=2)
def _load_builtin(name: str) -> LoadedModel:
    vqvae, var = builtin.load_builtin(name)
    source, verified = _source_words(var, f"weights shipped with varlite (`varlite/weights/{name}.pth`)")
    if verified == "not verified":
        verified = "loaded strictly: every tensor of the preset present, with its shape (torch.load weights_only)"
    names = CLASS_NAMES.get(name, ())
    return LoadedModel(f"builtin:{name}", name, vqvae.eval(), var.eval(), source, verified,
                       tuple(names) if len(names) == var.num_classes else ("",) * var.num_classes,
                       builtin.model_card(name), sampling=builtin.sampling_defaults(name))


def _imagenet_or_blank(num_classes: int) -> tuple[str, ...]:
    return imagenet.class_names() if num_classes == imagenet.NUM_CLASSES else ("",) * num_classes


@st.cache_resource(show_spinner="Loading the official model (once per server)...", max_entries=1)
def _load_official(depth: int) -> LoadedModel:
    vqvae, var = pretrained.load_official(depth)
    source, verified = _source_words(var, "official checkpoint")
    files = [str(pretrained.official_path("vae")), str(pretrained.official_path(f"d{depth}"))]
    return LoadedModel(f"official:d{depth}", f"VAR-d{depth}", vqvae.eval(), var.eval(), source, verified,
                       _imagenet_or_blank(var.num_classes), files=files, sampling=pretrained.OFFICIAL_SAMPLING)


@st.cache_resource(show_spinner="Loading the files (once per server)...", max_entries=1)
def _load_files(vae_path: str, var_path: str) -> LoadedModel:
    vqvae, var = pretrained.load_pair(vae_path, var_path)
    source, verified = _source_words(var, "files given on the Models page")
    return LoadedModel(f"path:{vae_path}|{var_path}", Path(var_path).stem, vqvae.eval(), var.eval(), source, verified,
                       _imagenet_or_blank(var.num_classes), files=[vae_path, var_path], sampling=pretrained.OFFICIAL_SAMPLING)


def load_model(key: str) -> LoadedModel:
    """The model of a picker key, loaded once per server (see the module docstring for the bound). Raises with a
    clear message when it cannot be loaded; callers show the error."""
    kind, _, rest = key.partition(":")
    if kind == "untrained":
        return _load_untrained(rest)
    if kind == "builtin":
        return _load_builtin(rest)
    if kind == "official":
        return _load_official(int(rest.removeprefix("d")))
    if kind == "path":
        vae_path, _, var_path = rest.partition("|")
        return _load_files(vae_path, var_path)
    raise ValueError(f"unknown model key {key!r}: expected builtin:<name>, official:d<depth>, path:<vae>|<var> "
                     f"or untrained:<preset>")


def reset_official() -> None:
    """Forget the loaded official models and file pairs (after files in the cache were deleted or downloaded)."""
    _load_official.clear()
    _load_files.clear()


def official_file_problems() -> dict[str, str]:
    """{official name: what is wrong} for the files in the cache that are damaged or not the official files
    (``pretrained.verify_official``: keys and shapes only, tensors memory-mapped; messages never quote the file)."""
    problems = {}
    for name in pretrained.OFFICIAL_FILES:
        path = pretrained.official_path(name)
        if path.is_file():
            stat = path.stat()
            problem = _verify_official(name, str(path), stat.st_size, stat.st_mtime_ns)
            if problem:
                problems[name] = problem
    return problems


@st.cache_data(show_spinner="Checking the cached files...", max_entries=16)
def _verify_official(name: str, path: str, size: int, mtime_ns: int) -> str:
    """'' when the file is the official one, else why not (cached per file version: path, size, mtime)."""
    try:
        pretrained.verify_official(name)
    except pretrained.CheckpointError as err:
        return str(err)
    return ""


def files_named_in(err: BaseException) -> list[str]:
    """The official files (by name: vae, d16, ...) whose path appears in an error message."""
    text = str(err)
    return [name for name in pretrained.OFFICIAL_FILES if str(pretrained.official_path(name)) in text]


def friendly_error(err: BaseException) -> str:
    """One paragraph for the page: what went wrong and (from the library's message) what to do."""
    if isinstance(err, FileNotFoundError):
        return (f"A file is missing: {err}. Download the official weights on the **Models** page "
                f"(or `python -m varlite download d16`), or give the paths of files you have.")
    return f"{type(err).__name__}: {err}"
