"""The model of a picker key (``app/registry.py``), loaded once per server and described for the pages.

``LoadedModel`` is a model as the pages use it: the VQVAE and the VAR, where the weights came from and how they were
checked, class names, a model card and the recommended sampling settings. ``load_model`` dispatches a picker key
to its loader; uploaded files (``app/uploads.py``) are read like files on disk, and messages about them name the
uploaded file, never its path on the server; files of the model folders are named relative to their folder.

Checks before use: every model's weights must be finite (``varlite.safe_io.check_finite``, which the library's
loaders run: a NaN weight would load, then fail or draw noise on every page). A training checkpoint (a run's, or
uploaded; read by the library's ``load_var_run``) and an exported weights file are checked before anything is built
(``varlite.preset_weights``): its preset must exist, every tensor must have the name, shape and dtype of that
preset's model, the file must hold every byte the tensors declare, and the server must have the memory for them;
the model is then built on the meta device and takes the file's tensors as they are (nothing is allocated for a
model that the file cannot fill).

Memory bound: ``st.cache_resource`` keeps at most one model per kind -- one official model, one pair of files, two
runs, two uploads, two built-in models (each a few MB) and two untrained ones -- shared by every session. Loading a
second official model evicts the first. Sharing is safe: generation keeps its KV cache in an object owned by the
call, never in the model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch
from safetensors import safe_open

from app.training_runs import run_card, shown_path
from app.uploads import UploadedFileError, literal, model_name, upload_store, without_upload_folder
from varlite import builtin, family, imagenet, pretrained
from varlite.core.configs import get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE
from varlite.data import cifar10, class_names_for, shapes
from varlite.device import pick_device
from varlite.preset_weights import model_from_states
from varlite.safe_io import CheckpointError, read_torch_file
from varlite.train.checkpoint import FORMAT as TRAIN_CHECKPOINT_FORMAT
from varlite.train.transformer import load_var_run

GENERIC_SAMPLING = {"cfg": 1.5, "top_k": 0, "top_p": 0.0}     # for models that recommend no setting
CLASS_NAMES = {"shapes": shapes.CLASS_NAMES, "cifar10": cifar10.CLASSES}


@dataclass
class LoadedModel:
    key: str
    name: str
    vqvae: VQVAE
    var: VAR
    source: str                   # where the weights came from, in words
    verified: str                 # how they were checked, in words
    class_names: tuple[str, ...]  # one per class; "" where unknown
    card: str = ""                # markdown model card (built-in models, training runs)
    card_folder: str = ""         # the folder of the files a card's image lines name
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
        verified = ("verified: every tensor name and shape matches the expected layout; every value finite"
                    if src.get("verified") else "not verified")
        return f"{src.get('what', default)} (layout: {src.get('layout', '?')})", verified
    return default, "not verified"


EXPORT_FORMAT, EXPORT_VERSION = builtin.FORMAT, builtin.VERSION      # an exported run is a built-in-format file


def read_exported_weights(path: Path, what: str, device) -> tuple[VAR, dict]:
    """(var with ``var.vqvae``, metadata) of a weights file in the built-in format (``varlite.builtin``: a
    safetensors file holding "vqvae.<key>" and "var.<key>" tensors, float16 or int8 with per-row scales, and the
    metadata format, version, preset, storage, sampling; optionally "class_names", a JSON list, or "dataset"), as
    the run export writes it. safetensors checks that the file holds every byte its header declares; the stored
    tensors are turned into float32, then checked against the preset before anything is built
    (``varlite.preset_weights``)."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:      # noqa: BLE001 -- safetensors raises several types for damaged files
        raise CheckpointError(f"{what} is not a readable safetensors file ({type(err).__name__})") from None
    if metadata.get("format") != EXPORT_FORMAT or metadata.get("version") != EXPORT_VERSION:
        raise CheckpointError(f"{what} is not a varlite weights export (its metadata should say format "
                              f"{EXPORT_FORMAT!r}, version {EXPORT_VERSION!r})")
    stored = {"vqvae": {}, "var": {}}
    scales = {"vqvae": {}, "var": {}}
    for name, tensor in tensors.items():
        target = scales if name.startswith(builtin.SCALE_PREFIX) else stored
        part, _, key = name.removeprefix(builtin.SCALE_PREFIX).partition(".")
        if part not in stored:
            raise CheckpointError(f"{what} holds a tensor whose name starts with neither vqvae. nor var.")
        target[part][key] = tensor
    states = {part: {key: _as_float32(t, scales[part].get(key)) for key, t in stored[part].items()}
              for part in stored}
    _, var = model_from_states(states, metadata.get("preset"), 4 * path.stat().st_size, what, device)
    return var, metadata


def _as_float32(stored: torch.Tensor, int8_scale: torch.Tensor | None) -> torch.Tensor:
    """A stored tensor as the model holds it: float16 -> float32, int8 q -> q * its row's scale, others as they
    are. (float32 is at most 4x the stored bytes, hence ``4 * file size`` as the bytes the file can hold.)"""
    if int8_scale is not None:
        if stored.dtype != torch.int8 or int8_scale.numel() != (stored.shape[0] if stored.ndim else 0):
            return stored          # not a valid int8 pair: the preset check refuses its dtype or shape
        return stored.float() * int8_scale.float().view(-1, *([1] * (stored.ndim - 1)))
    return stored.float() if stored.is_floating_point() else stored


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
    file_name = builtin.weights_path(name).name
    source, verified = _source_words(var, f"weights shipped with varlite (`varlite/weights/{file_name}`)")
    if verified == "not verified":
        verified = "loaded strictly: every tensor of the preset present, with its shape; every value finite"
    names = CLASS_NAMES.get(name, ())
    return LoadedModel(f"builtin:{name}", name, vqvae.eval(), var.eval(), source, verified,
                       tuple(names) if len(names) == var.num_classes else ("",) * var.num_classes,
                       builtin.model_card(name), sampling=builtin.sampling_defaults(name))


def _imagenet_or_blank(num_classes: int) -> tuple[str, ...]:
    return imagenet.class_names() if num_classes == imagenet.NUM_CLASSES else ("",) * num_classes


LOADED_OFFICIAL: dict[str, int | None] = {"depth": None}    # the depth ``_load_official`` holds now


def official_model(depth: int) -> LoadedModel:
    """The official VAR-d``depth``, loaded once per server. One that is not loaded yet is first checked against the
    memory the machine has free (``varlite.family.check_fits``): too little raises NotEnoughMemoryError, which
    says what is needed, what is free and what to do, instead of the server being killed while loading."""
    if LOADED_OFFICIAL["depth"] != depth:
        family.check_fits(depth)
    return _load_official(depth)


@st.cache_resource(show_spinner="Loading the official model (once per server)...", max_entries=1)
def _load_official(depth: int) -> LoadedModel:
    LOADED_OFFICIAL["depth"] = None          # the one held before is evicted when this one is stored
    vqvae, var = pretrained.load_official(depth)
    files = [shown_path(pretrained.official_path("vae")), shown_path(pretrained.official_path(f"d{depth}"))]
    source, verified = _source_words(var, "official checkpoint")
    LOADED_OFFICIAL["depth"] = depth
    return LoadedModel(f"official:d{depth}", f"VAR-d{depth}", vqvae.eval(), var.eval(), source, verified,
                       _imagenet_or_blank(var.num_classes), files=files, sampling=pretrained.DEMO_SAMPLING)


@st.cache_resource(show_spinner="Loading the files (once per server)...", max_entries=1)
def _load_files(vae_path: str, var_path: str) -> LoadedModel:
    vqvae, var = pretrained.load_pair(vae_path, var_path)
    files = [shown_path(vae_path), shown_path(var_path)]
    source, verified = _source_words(var, "files given on the Models page")
    return LoadedModel(f"path:{vae_path}|{var_path}", Path(var_path).stem, vqvae.eval(), var.eval(), source, verified,
                       _imagenet_or_blank(var.num_classes), files=files, sampling=pretrained.DEMO_SAMPLING)


def _run_model(key: str, var: VAR, configs: dict, source: str, run_dir: Path | None, files: list[str],
               read_folder_names: bool) -> LoadedModel:
    """A LoadedModel from ``load_var_run``'s (var, configs). A ``folder`` dataset's class names are read
    from its sub-folders only when ``read_folder_names`` (runs on the server, never uploads: their configs could
    name any server folder)."""
    train = configs["train"]
    names = class_names_for(train.get("dataset"), var.num_classes,
                            train.get("data_root") if read_folder_names else None)
    return LoadedModel(key, run_dir.name if run_dir else model_name(files[0]), var.vqvae, var, source,
                       f"checked before building: every tensor of preset `{train.get('preset')}` present, with its "
                       f"shape and dtype, and in the file; every value finite (torch.load weights_only)",
                       tuple(names), card=run_card(run_dir, configs) if run_dir else "",
                       card_folder=str(run_dir or ""), files=files,
                       sampling={"cfg": train.get("sample_cfg", GENERIC_SAMPLING["cfg"]), "top_k": 0, "top_p": 0.0})


@st.cache_resource(show_spinner="Loading the training run (once per server)...", max_entries=2)
def _load_run(run_path: str) -> LoadedModel:
    """A train-var run inside the model folders: its folder, or its checkpoint.pt. The checkpoint file itself is
    resolved and must lie inside the model folders too (a link in the run folder cannot lead elsewhere)."""
    path = Path(run_path)
    run_dir = path if path.is_dir() else path.parent
    checkpoint = pretrained.resolve_model_path(path / "checkpoint.pt" if path.is_dir() else path)
    var, configs = load_var_run(checkpoint, pick_device("auto"))
    return _run_model(f"run:{run_path}", var, configs,
                      f"training run `{shown_path(run_dir)}` (`python -m varlite train-var`)", run_dir,
                      [shown_path(checkpoint)], read_folder_names=True)


def upload_kind(path: Path) -> str:
    """What an uploaded weights file is: "export" (a safetensors file: an 8-byte header length, then its JSON
    header), "checkpoint" (a train-var ``checkpoint.pt``; read safely, tensors memory-mapped, not loaded) or "state
    dict" (any other torch file: checked as one)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        return "export"
    obj = read_torch_file(path, remedy="upload the file again, or another one", mmap=True)
    return "checkpoint" if isinstance(obj, dict) and obj.get("format") == TRAIN_CHECKPOINT_FORMAT else "state dict"


def _export_model(key: str, var: VAR, metadata: dict, name: str) -> LoadedModel:
    """A LoadedModel from ``read_exported_weights``: class names from the file's "class_names" (a JSON list) or its
    "dataset"; the sampling settings it recommends."""
    try:
        names = json.loads(metadata.get("class_names", "null"))
        sampling = json.loads(metadata.get("sampling", "{}"))
    except ValueError:
        names, sampling = None, {}
    if not (isinstance(names, list) and len(names) == var.num_classes and all(isinstance(n, str) for n in names)):
        names = class_names_for(metadata.get("dataset"), var.num_classes, None)
    sampling = {k: sampling[k] for k in GENERIC_SAMPLING if isinstance(sampling, dict)
                and isinstance(sampling.get(k), (int, float)) and not isinstance(sampling.get(k), bool)}
    return LoadedModel(key, model_name(name), var.vqvae, var, f"uploaded weights export {literal(name)}",
                       f"checked before building: every tensor of preset `{metadata.get('preset')}` present, with "
                       f"its shape and dtype; every value finite (safetensors: no code in the file)",
                       tuple(names), files=[name], sampling=sampling)


@st.cache_resource(show_spinner="Checking and loading the uploaded files (once per server)...", max_entries=2)
def _load_upload(var_sha: str, vae_sha: str) -> LoadedModel:
    """An upload: a weights export (``.safetensors``) or a train-var ``checkpoint.pt`` alone, or a VAR state_dict
    with its VQVAE state_dict."""
    store = upload_store()
    var_path, var_name = store.path(var_sha), store.name(var_sha)
    vae_path, vae_name = (store.path(vae_sha), store.name(vae_sha)) if vae_sha else (None, "")
    key = f"upload:{var_sha}" + (f"|{vae_sha}" if vae_sha else "")
    device = pick_device("auto")
    try:
        kind = upload_kind(var_path)
        if kind == "export":
            var, metadata = read_exported_weights(var_path, literal(var_name), device)
            return _export_model(key, var, metadata, var_name)
        if kind == "checkpoint":
            var, configs = load_var_run(var_path, device)
            return _run_model(key, var, configs, f"uploaded training checkpoint {literal(var_name)}", None,
                              [var_name], read_folder_names=False)
        pretrained.check_is_var(pretrained.load_state_dict(var_path), literal(var_name))
        if vae_path is None:
            raise UploadedFileError(f"{literal(var_name)} is the state_dict of a VAR transformer alone: it needs the "
                                    f"VQVAE (tokenizer) it was trained with. Upload that .pth too, or upload the "
                                    f"run's weights export (`python -m varlite export-run RUN --out "
                                    f"model.safetensors`), which holds both.")
        vqvae, var = pretrained.load_pair(vae_path, var_path)      # strict layout, finite weights
    except UploadedFileError:
        raise
    except Exception as err:      # noqa: BLE001 -- every loader error, with the upload's names for the paths
        text = str(err).replace(str(var_path), literal(var_name))
        text = text.replace(str(vae_path), literal(vae_name)) if vae_path else text
        raise UploadedFileError(f"{type(err).__name__}: {text}") from None
    source, verified = _source_words(var, f"uploaded files {literal(vae_name)} + {literal(var_name)}")
    for path, name in ((var_path, var_name), (vae_path, vae_name)):
        source = source.replace(str(path), literal(name))
    return LoadedModel(key, model_name(var_name), vqvae.eval(), var.eval(), source, verified,
                       _imagenet_or_blank(var.num_classes), files=[vae_name, var_name],
                       sampling=pretrained.DEMO_SAMPLING if var.num_classes == imagenet.NUM_CLASSES
                       else builtin.DEFAULT_SAMPLING)


def load_model(key: str) -> LoadedModel:
    """The model of a picker key, loaded once per server (see the module docstring for the bound). Raises with a
    clear message when it cannot be loaded; callers show the error."""
    kind, _, rest = key.partition(":")
    if kind == "untrained":
        return _load_untrained(rest)
    if kind == "builtin":
        return _load_builtin(rest)
    if kind == "official":
        return official_model(int(rest.removeprefix("d")))
    if kind == "path":
        vae_path, _, var_path = rest.partition("|")
        return _load_files(vae_path, var_path)
    if kind == "run":
        return _load_run(str(pretrained.resolve_model_path(rest)))     # inside the model folders, or refused
    if kind == "upload":
        var_sha, _, vae_sha = rest.partition("|")
        return _load_upload(var_sha, vae_sha)
    raise ValueError(f"unknown model key {key!r}: expected builtin:<name>, official:d<depth>, path:<vae>|<var>, "
                     f"run:<folder>, upload:<sha256>[|<sha256>] or untrained:<preset>")


def reset_official() -> None:
    """Forget the loaded official models, file pairs and runs (after files in the folders were deleted or
    downloaded)."""
    _load_official.clear()
    LOADED_OFFICIAL["depth"] = None
    _load_files.clear()
    _load_run.clear()


def without_server_paths(text: str) -> str:
    """``text`` with every path of a model folder made relative to it (``runs/mine/checkpoint.pt``) and the upload
    folder's paths cut to the file name: the pages never show where the server keeps its files."""
    try:
        folders = pretrained.model_folders()
    except OSError:
        folders = []
    for folder in sorted(folders, key=lambda f: len(str(f)), reverse=True):
        text = text.replace(f"{folder}{os.sep}", "").replace(str(folder), "the model folder")
    return without_upload_folder(text)


def friendly_error(err: BaseException) -> str:
    """One paragraph for the page: what went wrong and (from the library's message) what to do; no server paths."""
    if isinstance(err, UploadedFileError):
        return without_server_paths(str(err))
    if isinstance(err, FileNotFoundError):
        return without_server_paths(
            f"A file is missing: {err}. Download the official weights on the **Models** page (or `python -m varlite "
            f"download d16`), or give the names of files you have.")
    return without_server_paths(f"{type(err).__name__}: {err}")
