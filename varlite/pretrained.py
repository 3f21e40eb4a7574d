"""Official checkpoints: where they are, how to fetch them, and how to load them safely and strictly.

The official files (Hugging Face ``FoundationVision/var``) are plain state_dicts: ``vae_ch160v4096z32.pth`` (the
tokenizer shared by all depths) and ``var_d16.pth`` ... ``var_d36.pth``. ``download_official`` fetches them with
huggingface_hub into the shared Hugging Face cache (``varlite.download.hub_download``); copies already in varlite's
own folder (``$VARLITE_HOME``, where earlier versions of varlite downloaded them) are found and used instead
(``official_path``). varlite's classes use the official parameter names, so no renaming is needed: a file is loaded
with ``torch.load(weights_only=True)`` (a pickle that tries to run code is refused before anything runs), its config
is inferred from the tensor shapes, its keys and shapes are checked against the official layout
(``layouts/official.json``, taken from the official code) or, for other configs, against the model varlite builds
for the inferred config, and only then loaded.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from .core.configs import OFFICIAL_PATCH_NUMS, VARConfig, VQVAEConfig
from .download import STALL_S, hub_cached, hub_download, varlite_home
from .device import pick_device
from .safe_io import (CheckpointError, CorruptCheckpointError, UnsafeCheckpointError, check_finite,  # noqa: F401
                      read_torch_file)
from .core.var import VAR, block_causal_bias
from .core.vqvae import VQVAE

REPO_ID = "FoundationVision/var"     # the official files' Hugging Face repository, and its branch
REVISION = "main"
# Their folder on huggingface.co. Downloads go through huggingface_hub, which reads a mirror from HF_ENDPOINT.
# The official code samples with two settings: its demo (demo_sample.ipynb: cfg 4, top-k 900, top-p 0.95, no
# smoothing) for pictures, and its README's FID setting (cfg 1.5, top-k 900, top-p 0.96, no smoothing) for metrics.
DEMO_SAMPLING = {"cfg": 4.0, "top_k": 900, "top_p": 0.95}
FID_SAMPLING = {"cfg": 1.5, "top_k": 900, "top_p": 0.96}


# ------------------------------------------------------------------------------------------------ errors
# CheckpointError (a ValueError) and its UnsafeCheckpointError / CorruptCheckpointError live in varlite.safe_io,
# beside the safe reading every loader shares (imported here too, for callers of this module); the errors below
# derive from it.
class NotAStateDictError(CheckpointError):
    """The file loaded but holds something other than a {name: tensor} dict."""


class WrongModelError(CheckpointError):
    """A VQVAE file given where a VAR file was expected, or the reverse."""


class UnknownLayoutError(CheckpointError):
    """The tensors look like neither a VAR nor a VQVAE state_dict."""


class LayoutMismatchError(CheckpointError):
    """Missing / unexpected keys or wrong shapes compared with the expected layout."""


class NotInModelFolderError(ValueError):
    """A user-typed path lies outside the model folders (``resolve_model_path``); says nothing about the file."""


SUPPORTED_FILES = ("Supported: the official files (vae_ch160v4096z32.pth with var_d16/d20/d24/d30.pth), loaded by "
                   "load_official(depth) or load_pair(vae_path, var_path); VQVAE + VAR state_dicts of any other "
                   "config saved by varlite, loaded as a pair by load_pair(vae_path, var_path), which reads the "
                   "patch_nums from the VAR file; built-in models by varlite.builtin.load_builtin(name).")


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class OfficialFile:
    name: str            # short name used on the command line: vae, d16, ...
    filename: str
    layout: str          # entry of layouts/official.json
    approx_mb: int


OFFICIAL_FILES: dict[str, OfficialFile] = {f.name: f for f in [
    OfficialFile("vae", "vae_ch160v4096z32.pth", "vae_ch160v4096z32", 436),
    OfficialFile("d16", "var_d16.pth", "var_d16", 1243),
    OfficialFile("d20", "var_d20.pth", "var_d20", 2405),
    OfficialFile("d24", "var_d24.pth", "var_d24", 4136),
    OfficialFile("d30", "var_d30.pth", "var_d30", 8043),
    OfficialFile("d36", "var_d36.pth", "var_d36_s512_UNVERIFIED", 9436),
]}


def official_depths() -> list[str]:
    """The official depths by number, as text: ['16', '20', '24', '30', '36']."""
    return [name[1:] for name in OFFICIAL_FILES if name != "vae"]


@lru_cache(maxsize=1)
def official_layouts() -> dict:
    """{layout name: {"file", "constructor_args", "tensors": [[key, shape, kind], ...]}} from the official code."""
    with open(Path(__file__).parent / "layouts" / "official.json") as f:
        return json.load(f)["models"]


def official_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The file varlite reads for the official checkpoint ``name`` (it may not exist yet):

    - with ``cache_dir``: ``cache_dir/<filename>``, the flat folder ``download_official(name, cache_dir)`` fills;
    - else the copy in varlite's own folder, ``$VARLITE_HOME/<filename>`` (``varlite.download.varlite_home``), if
      there is one: files downloaded by earlier versions of varlite, or put there by hand, are used as they are;
    - else the copy in the Hugging Face cache (``$HF_HOME/hub``), if there is one;
    - else ``$VARLITE_HOME/<filename>``, which does not exist: where a file fetched by hand is looked for.
    """
    if name not in OFFICIAL_FILES:
        raise KeyError(f"unknown official checkpoint {name!r}; choose one of {sorted(OFFICIAL_FILES)}")
    filename = OFFICIAL_FILES[name].filename
    if cache_dir is not None:
        return Path(cache_dir) / filename
    own = varlite_home() / filename
    if own.is_file():
        return own
    return hub_cached(REPO_ID, filename, REVISION) or own


def download_official(name: str, cache_dir: str | os.PathLike | None = None, *, endpoint: str | None = None,
                      progress: bool = True, stall_s: int = STALL_S, deadline_s: float | None = None) -> Path:
    """The path of the official checkpoint ``name``, downloaded if needed, its layout verified.

    A copy that ``official_path`` finds and that passes ``verify_official`` is used without any network access.
    Otherwise the file is downloaded from ``FoundationVision/var`` with huggingface_hub
    (``varlite.download.hub_download``: from ``endpoint``, else ``$HF_ENDPOINT``, else huggingface.co; into
    ``cache_dir`` if given, else the shared Hugging Face cache; a read without a byte for ``stall_s`` seconds is
    retried a few times, and the whole download stops at ``deadline_s``) and verified. A copy that fails the
    check, found or downloaded, is moved aside to ``<path>.rejected`` and never read again; a found one is then
    downloaded anew, a downloaded one raises its ``CheckpointError``. Network failures raise
    ``varlite.download.DownloadError``, which says what to do; with ``HF_HUB_OFFLINE=1`` a file that is not on
    disk raises it at once.
    """
    path = official_path(name, cache_dir)   # raises a clear KeyError for an unknown name
    if path.is_file():
        try:
            return verify_official(name, cache_dir)
        except CheckpointError:
            set_aside(path)
    by_hand = Path(cache_dir) if cache_dir is not None else varlite_home()
    entry = OFFICIAL_FILES[name]
    path = hub_download(REPO_ID, entry.filename, REVISION, local_dir=cache_dir, endpoint=endpoint,
                        progress=progress, stall_s=stall_s, deadline_s=deadline_s, by_hand=by_hand / entry.filename)
    try:
        verify_layout(load_state_dict(path), official_layouts()[entry.layout]["tensors"], what=str(path))
    except CheckpointError as err:
        rejected = set_aside(path)
        raise type(err)(f"{err}\nThe downloaded file was moved aside to {rejected} and is not used.") from err
    return path


def verify_official(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Check the file ``official_path(name, cache_dir)`` without loading its weights (tensors are memory-mapped;
    only keys and shapes are compared with the official layout); returns its path. Raises FileNotFoundError when
    there is no such file, a ``CheckpointError`` naming the file when it is damaged or not the official file
    (delete it with ``delete_official``, or download it again: ``download_official`` moves a bad file aside to
    ``<name>.rejected`` and fetches it anew)."""
    path = official_path(name, cache_dir)
    entry = OFFICIAL_FILES[name]
    verify_layout(load_state_dict(path), official_layouts()[entry.layout]["tensors"], what=str(path))
    return path


def delete_official(name: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Delete the file ``official_path(name, cache_dir)`` if there is one. In the Hugging Face cache that path is a
    link to a blob: both go, so a new download fetches the bytes again instead of linking the old blob."""
    path = official_path(name, cache_dir)
    if path.is_symlink():
        path.resolve().unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def set_aside(path: Path) -> Path:
    """Move a rejected file to ``<path>.rejected`` (replacing an older one) so that it is never read again; returns
    the new path. In the Hugging Face cache ``path`` is a link to a blob: the blob is moved and the link removed."""
    rejected = path.with_name(path.name + ".rejected")
    os.replace(path.resolve(), rejected)
    if path.is_symlink():
        path.unlink()
    return rejected


# ------------------------------------------------------------------------------------------------ safe loading
def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` (``read_torch_file``) with every failure turned into a specific
    ``CheckpointError``; messages describe the kind of file, never its bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; download one with `python -m varlite download d16` "
                                f"(or vae, d20, ...) or give the path of a .pth file")
    obj = read_torch_file(path, remedy="delete it and download (or save) it again, or give the path of another "
                                       ".pth file", mmap=True,
                          unsafe_hint="in the program that wrote it, save model.state_dict() instead of the model "
                                      "or other objects")
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        hint = f" with keys {list(obj)[:5]}" if isinstance(obj, dict) else ""
        raise NotAStateDictError(f"{path} holds a {type(obj).__name__}{hint}, not a state_dict of tensors. If it is a "
                                 f"training checkpoint, save its model's state_dict() on its own first.")
    return obj


def verify_layout(sd: dict[str, torch.Tensor], expected: list, what: str, tolerate_shape: tuple[str, ...] = (
        "quantize.ema_vocab_hit_SV",)) -> None:
    """Exact key set and shapes. ``expected`` rows are [key, shape, ...]. Keys in ``tolerate_shape`` may differ in
    shape (upstream replaces ``quantize.ema_vocab_hit_SV``, a training statistic, by the model's own buffer)."""
    want = {row[0]: tuple(row[1]) for row in expected}
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    if missing or unexpected:
        raise LayoutMismatchError(
            f"{what}: {len(missing)} missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} and "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
            f"compared with the expected layout")
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape and k not in tolerate_shape:
            raise LayoutMismatchError(f"{what}: tensor {k!r} has shape {tuple(sd[k].shape)}, expected {shape}")


# ------------------------------------------------------------------------------------------------ config inference
def looks_like_vqvae(sd) -> bool:
    return "quantize.embedding.weight" in sd and "encoder.conv_in.weight" in sd


def looks_like_var(sd) -> bool:
    return "class_emb.weight" in sd and "lvl_1L" in sd and "head.weight" in sd


def infer_vqvae_config(sd: dict[str, torch.Tensor], patch_nums=OFFICIAL_PATCH_NUMS) -> VQVAEConfig:
    """Read V, Cv, ch, ch_mult, res blocks, attention and phi count off the tensor shapes.

    patch_nums are not stored in a VQVAE file (no weight depends on them); they come from the VAR it serves.
    """
    V, Cv = sd["quantize.embedding.weight"].shape
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    num_res_blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
    phis = len({k.split(".")[3] for k in sd if k.startswith("quantize.quant_resi.qresi_ls.")})
    return VQVAEConfig(vocab_size=V, z_channels=Cv, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                       using_sa=f"encoder.down.{levels[-1]}.attn.0.qkv.weight" in sd,
                       using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd,
                       quant_conv_ks=sd["quant_conv.weight"].shape[-1], share_quant_resi=phis,
                       patch_nums=tuple(patch_nums))


def infer_var_config(sd: dict[str, torch.Tensor]) -> VARConfig:
    """Depth, width, heads (from ``scale_mul_1H11``), classes, patch_nums (from ``lvl_1L``), shared AdaLN."""
    lvl_L = sd["lvl_1L"].reshape(-1)
    counts = torch.bincount(lvl_L).tolist()
    patch_nums = tuple(round(c ** 0.5) for c in counts)
    if any(p * p != c for p, c in zip(patch_nums, counts)):
        raise UnknownLayoutError(f"lvl_1L gives {counts} tokens per scale, which are not square numbers")
    C = sd["class_emb.weight"].shape[1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    return VARConfig(vocab_size=sd["head.weight"].shape[0], z_channels=sd["word_embed.weight"].shape[1],
                     patch_nums=patch_nums, num_classes=sd["class_emb.weight"].shape[0] - 1, depth=depth,
                     embed_dim=C, num_heads=sd["blocks.0.attn.scale_mul_1H11"].shape[1],
                     mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / C,
                     shared_aln="shared_ada_lin.1.weight" in sd)


def official_layout_for(model_kind: str, cfg) -> str | None:
    """The official layout name matching an inferred config, or None for non-official configs."""
    for name, entry in official_layouts().items():
        args = entry["constructor_args"]
        if model_kind == "vqvae" and name.startswith("vae") and (args["vocab_size"], args["z_channels"], args["ch"]) == (
                cfg.vocab_size, cfg.z_channels, cfg.ch) and cfg.ch_mult == (1, 1, 2, 2, 4):
            return name
        if model_kind == "var" and name.startswith("var") and (args["depth"], args["embed_dim"], args["shared_aln"],
                                                               tuple(args["patch_nums"])) == (
                cfg.depth, cfg.embed_dim, cfg.shared_aln, tuple(cfg.patch_nums)):
            return name
    return None


def expected_layout(model: torch.nn.Module) -> list:
    """[key, shape] rows of a model's own state_dict (build it on the meta device: no memory, no time)."""
    return [[k, tuple(v.shape)] for k, v in model.state_dict().items()]


# ------------------------------------------------------------------------------------------------ loaders
def vqvae_from_state_dict(sd: dict[str, torch.Tensor], patch_nums=OFFICIAL_PATCH_NUMS, what: str = "state_dict") -> VQVAE:
    """Infer the config, verify the layout strictly, build the VQVAE around the given tensors (no copy, but for the
    decoder's conv weights, which the Decoder lays out channels-last)."""
    if not looks_like_vqvae(sd):
        if looks_like_var(sd):
            raise WrongModelError(f"{what} is a VAR transformer checkpoint, not a VQVAE; load it with load_var(path, vqvae)")
        raise UnknownLayoutError(f"{what} is not a VQVAE state_dict (no 'quantize.embedding.weight' / "
                                 f"'encoder.conv_in.weight'; first keys: {list(sd)[:5]})")
    cfg = infer_vqvae_config(sd, patch_nums)
    with torch.device("meta"):
        model = VQVAE(cfg)
    layout = official_layout_for("vqvae", cfg)
    verify_layout(sd, official_layouts()[layout]["tensors"] if layout else expected_layout(model), what)
    sd = dict(sd)
    ema = model.quantize.ema_vocab_hit_SV
    if tuple(sd["quantize.ema_vocab_hit_SV"].shape) != tuple(ema.shape):   # as upstream: keep the model's own
        sd["quantize.ema_vocab_hit_SV"] = torch.zeros(ema.shape)
    model.load_state_dict(sd, strict=True, assign=True)
    check_finite(model, what)
    model.source = {"what": what, "layout": layout or "varlite (non-official config)", "verified": True}
    return model.eval()


def check_is_var(sd: dict[str, torch.Tensor], what: str) -> None:
    """Raise WrongModelError for a VQVAE state_dict, UnknownLayoutError for anything else that is not a VAR."""
    if not looks_like_var(sd):
        if looks_like_vqvae(sd):
            raise WrongModelError(f"{what} is a VQVAE (tokenizer) checkpoint, not a VAR; load it with load_vqvae(path)")
        raise UnknownLayoutError(f"{what} is not a VAR state_dict (no 'class_emb.weight' / 'lvl_1L' / 'head.weight'; "
                                 f"first keys: {list(sd)[:5]})")


def var_from_state_dict(sd: dict[str, torch.Tensor], vqvae: VQVAE, what: str = "state_dict") -> VAR:
    """Infer the config, check it against the VQVAE, verify the layout strictly, build the VAR (no copy)."""
    check_is_var(sd, what)
    cfg = infer_var_config(sd)
    vq_cfg = vqvae.config
    if (cfg.vocab_size, cfg.z_channels) != (vq_cfg.vocab_size, vq_cfg.z_channels):
        raise CheckpointError(f"{what} predicts V={cfg.vocab_size} tokens of Cv={cfg.z_channels} channels but the "
                              f"VQVAE has V={vq_cfg.vocab_size}, Cv={vq_cfg.z_channels}: they are not a pair")
    if tuple(cfg.patch_nums) != tuple(vq_cfg.patch_nums):
        raise CheckpointError(f"{what} uses patch_nums {cfg.patch_nums} but the VQVAE was built for "
                              f"{vq_cfg.patch_nums}. {SUPPORTED_FILES} Here: load_pair(vae_path, var_path), or "
                              f"load_vqvae(path, patch_nums={cfg.patch_nums}) first")
    layout = official_layout_for("var", cfg)
    with torch.device("meta"):
        model = VAR(cfg, vqvae)
    verify_layout(sd, official_layouts()[layout]["tensors"] if layout else expected_layout(model), what, ())
    if not torch.equal(sd["attn_bias_for_masking"], block_causal_bias(cfg.patch_nums)):
        raise LayoutMismatchError(f"{what}: attn_bias_for_masking is not the block-causal mask of patch_nums {cfg.patch_nums}")
    model.load_state_dict(sd, strict=True, assign=True)
    check_finite(model, what)
    model.source = {"what": what, "layout": layout or "varlite (non-official config)", "verified": True}
    return model.eval()


def load_vqvae(path: str | os.PathLike, patch_nums=OFFICIAL_PATCH_NUMS, device: str | torch.device = "auto") -> VQVAE:
    """Load a VQVAE file (e.g. ``vae_ch160v4096z32.pth``) safely and strictly; returns it in eval mode on ``device``
    ("auto": cuda if available, else mps, else cpu)."""
    return vqvae_from_state_dict(load_state_dict(path), patch_nums, what=str(path)).to(pick_device(device))


def load_var(path: str | os.PathLike, vqvae: VQVAE) -> VAR:
    """Load a VAR file (e.g. ``var_d16.pth``) safely and strictly on top of its VQVAE; returns it in eval mode, on
    the VQVAE's device."""
    var = var_from_state_dict(load_state_dict(path), vqvae, what=str(path))
    return var.to(next(vqvae.parameters()).device)


def load_pair(vae_path: str | os.PathLike, var_path: str | os.PathLike,
              device: str | torch.device = "auto") -> tuple[VQVAE, VAR]:
    """(vqvae, var) from a VQVAE file and the VAR file trained on it, official or not: the VAR file is read first,
    its patch_nums (from ``lvl_1L``) build the VQVAE, then both are verified strictly and loaded onto ``device``."""
    var_sd = load_state_dict(var_path)
    check_is_var(var_sd, str(var_path))
    vqvae = load_vqvae(vae_path, patch_nums=infer_var_config(var_sd).patch_nums, device="cpu")
    var = var_from_state_dict(var_sd, vqvae, what=str(var_path))
    return vqvae.to(pick_device(device)), var.to(pick_device(device))


def load_official(depth: int, cache_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "auto") -> tuple[VQVAE, VAR]:
    """(vqvae, var) for ``var_d{depth}.pth`` from the cache (see ``python -m varlite download``), on ``device``.
    Sample with ``DEMO_SAMPLING`` for the official demo's look (``FID_SAMPLING`` for its metrics)."""
    name = f"d{depth}"
    if name not in OFFICIAL_FILES:
        raise ValueError(f"there is no official VAR-d{depth}; the official depths are {', '.join(official_depths())}")
    return load_pair(official_path("vae", cache_dir), official_path(name, cache_dir), device)


# ------------------------------------------------------------------------------------------------ paths typed by users
def model_folders(extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The folders whose files a user may name: the cache (``$VARLITE_HOME``, else ~/.cache/varlite), the folders in
    ``$VARLITE_MODEL_DIRS`` (separated by ``os.pathsep``), then ``extra``; each resolved (symlinks followed)."""
    listed = [p for p in os.environ.get("VARLITE_MODEL_DIRS", "").split(os.pathsep) if p]
    return [Path(p).expanduser().resolve() for p in [varlite_home(), *listed, *extra]]


def resolve_model_path(user_path: str | os.PathLike, extra_folders: Sequence[str | os.PathLike] = ()) -> Path:
    """The resolved path of a file a user typed, if it lies inside one of ``model_folders(extra_folders)``.

    A relative path is taken relative to the first folder (the cache). ``..`` and symlinks are resolved before the
    check, so neither can lead outside. Anything else raises ``NotInModelFolderError``, whose message is the same
    whether or not the file exists and never reads the file. A path inside a folder may still not exist: the
    loaders then raise FileNotFoundError.
    """
    folders = model_folders(extra_folders)
    typed = Path(user_path).expanduser()
    resolved = (typed if typed.is_absolute() else folders[0] / typed).resolve()
    if not str(user_path).strip() or not any(resolved.is_relative_to(folder) for folder in folders):
        raise NotInModelFolderError(
            f"{str(user_path)!r} is not in the model folder. Files can be loaded only from "
            f"{', '.join(str(f) for f in folders)}: copy the file there (set VARLITE_HOME, or list more folders in "
            f"VARLITE_MODEL_DIRS separated by {os.pathsep!r}) and give its name")
    return resolved
