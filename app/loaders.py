"""The model of a picker key (``app/registry.py``), loaded once per server and described for the pages.

``LoadedModel`` is a model as the pages use it: the VQVAE and the VAR, where the weights came from and how they were
checked, class names, a model card and the recommended sampling settings. ``load_model`` dispatches a picker key
to its loader; uploaded files (``app/uploads.py``) are read like files on disk, and messages about them name the
uploaded file, never its path on the server.

Memory bound: ``st.cache_resource`` keeps at most one model per kind -- one official model, one pair of files, two
runs, two uploads, two built-in models (each a few MB) and two untrained ones -- shared by every session. Loading a
second official model evicts the first. Sharing is safe: generation keeps its KV cache in an object owned by the
call, never in the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

from app.training_runs import run_card
from app.uploads import UploadedFileError, upload_store
from varlite import builtin, imagenet, pretrained
from varlite.cli import class_names_for
from varlite.core.configs import get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE
from varlite.data import cifar10, shapes
from varlite.device import pick_device
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
                       _imagenet_or_blank(var.num_classes), files=files, sampling=pretrained.DEMO_SAMPLING)


@st.cache_resource(show_spinner="Loading the files (once per server)...", max_entries=1)
def _load_files(vae_path: str, var_path: str) -> LoadedModel:
    vqvae, var = pretrained.load_pair(vae_path, var_path)
    source, verified = _source_words(var, "files given on the Models page")
    return LoadedModel(f"path:{vae_path}|{var_path}", Path(var_path).stem, vqvae.eval(), var.eval(), source, verified,
                       _imagenet_or_blank(var.num_classes), files=[vae_path, var_path],
                       sampling=pretrained.DEMO_SAMPLING)


def _run_model(key: str, var: VAR, configs: dict, source: str, run_dir: Path | None, files: list[str],
               read_folder_names: bool) -> LoadedModel:
    """A LoadedModel from ``load_var_run``'s (var, configs). A ``folder`` dataset's class names are read from its
    sub-folders only when ``read_folder_names`` (runs on the server, never uploads: their configs could name any
    server folder)."""
    train = configs["train"]
    names = class_names_for(train.get("dataset"), var.num_classes,
                            train.get("data_root") if read_folder_names else None)
    return LoadedModel(key, run_dir.name if run_dir else Path(files[0]).stem, var.vqvae.eval(), var.eval(), source,
                       f"loaded strictly: every tensor of preset `{train.get('preset')}` present, with its shape "
                       f"(torch.load weights_only)", tuple(names), card=run_card(run_dir, configs) if run_dir else "",
                       card_folder=str(run_dir or ""), files=files,
                       sampling={"cfg": train.get("sample_cfg", GENERIC_SAMPLING["cfg"]), "top_k": 0, "top_p": 0.0})


@st.cache_resource(show_spinner="Loading the training run (once per server)...", max_entries=2)
def _load_run(run_path: str) -> LoadedModel:
    path = Path(run_path)
    var, configs = load_var_run(path, pick_device("auto"))
    run_dir = path if path.is_dir() else path.parent
    return _run_model(f"run:{run_path}", var, configs, f"training run `{run_dir}` (`python -m varlite train-var`)",
                      run_dir, [str(path / "checkpoint.pt" if path.is_dir() else path)], read_folder_names=True)


def is_training_checkpoint(path: Path) -> bool:
    """Whether a file is a varlite training checkpoint (read safely; tensors memory-mapped, not loaded)."""
    obj = pretrained.read_torch_file(path, remedy="upload the file again, or another one", mmap=True)
    return isinstance(obj, dict) and obj.get("format") == TRAIN_CHECKPOINT_FORMAT


@st.cache_resource(show_spinner="Checking and loading the uploaded files (once per server)...", max_entries=2)
def _load_upload(var_sha: str, vae_sha: str) -> LoadedModel:
    """An upload: a train-var ``checkpoint.pt`` alone, or a VAR state_dict with its VQVAE state_dict."""
    store = upload_store()
    var_path, var_name = store.path(var_sha), store.name(var_sha)
    vae_path, vae_name = (store.path(vae_sha), store.name(vae_sha)) if vae_sha else (None, "")
    key = f"upload:{var_sha}" + (f"|{vae_sha}" if vae_sha else "")
    try:
        if is_training_checkpoint(var_path):
            var, configs = load_var_run(var_path, pick_device("auto"))
            return _run_model(key, var, configs, f"uploaded training checkpoint `{var_name}`", None, [var_name],
                              read_folder_names=False)
        pretrained.check_is_var(pretrained.load_state_dict(var_path), var_name)
        if vae_path is None:
            raise UploadedFileError(f"{var_name} is the state_dict of a VAR transformer alone: it needs the VQVAE "
                                    f"(tokenizer) it was trained with. Upload that .pth too, or upload the train-var "
                                    f"run's checkpoint.pt, which holds both.")
        vqvae, var = pretrained.load_pair(vae_path, var_path)
    except UploadedFileError:
        raise
    except Exception as err:      # noqa: BLE001 -- every loader error, with the upload's names for the paths
        text = str(err).replace(str(var_path), var_name)
        text = text.replace(str(vae_path), vae_name) if vae_path else text
        raise UploadedFileError(f"{type(err).__name__}: {text}") from None
    source, verified = _source_words(var, f"uploaded files `{vae_name}` + `{var_name}`")
    for path, name in ((var_path, var_name), (vae_path, vae_name)):
        source = source.replace(str(path), name)
    return LoadedModel(key, Path(var_name).stem, vqvae.eval(), var.eval(), source, verified,
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
        return _load_official(int(rest.removeprefix("d")))
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
    _load_files.clear()
    _load_run.clear()


def friendly_error(err: BaseException) -> str:
    """One paragraph for the page: what went wrong and (from the library's message) what to do."""
    if isinstance(err, UploadedFileError):
        return str(err)
    if isinstance(err, FileNotFoundError):
        return (f"A file is missing: {err}. Download the official weights on the **Models** page "
                f"(or `python -m varlite download d16`), or give the paths of files you have.")
    return f"{type(err).__name__}: {err}"
