"""What the pages share: which models exist, loading them once per server, and traces cached by their settings.

Nothing here does model maths. Models come from ``varlite.builtin`` / ``varlite.pretrained``; a generation trace is
``VAR.generate_steps(..., trace=True)`` turned into plain numpy arrays (so ``st.cache_data`` can store and share it);
an encoding trace is ``VQVAE.encode_steps``. Caches:

- ``load_model``          st.cache_resource: one model object per server, shared by every session. Safe because
                          generation keeps its KV cache in an object owned by the call (``varlite.transformer.KVCache``).
- ``generation_trace``    st.cache_data keyed by (model, class, seed, cfg, top-k, top-p, smoothing): every scale's
                          tokens, probabilities, residual, f_hat and decoded image, decoded once, here.
- ``attention_at``        st.cache_data keyed by the same settings plus (scale, row, column): one position's attention
                          over all visible tokens, per layer and head. Small models keep every scale's attention in
                          the trace (float16, <= 8 MB); for large ones it is captured on demand (every scale's
                          attention of a 16-layer model would take ~150 MB per trace).
- ``encode_trace``        st.cache_data keyed by (model, image bytes).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st
import torch

from varlite.configs import PRESETS, get_preset
from varlite.var import VAR
from varlite.vqvae import VQVAE

REPO_ROOT = Path(__file__).resolve().parent.parent
LESSONS_DIR = REPO_ROOT / "lessons"
MAX_UPLOAD_MB = 10
MAX_IMAGE_PIXELS = 40_000_000      # refuse decompression bombs before decoding them
OFFICIAL_DEPTHS = (16, 20, 24, 30)
DEFAULT_MODEL = "builtin:shapes"
UNTRAINED_TINY = "untrained:tiny"


def optional_module(name: str):
    """Import ``varlite.<name>`` if this version of the library has it, else None (the app degrades gracefully)."""
    try:
        return importlib.import_module(f"varlite.{name}")
    except ImportError:
        return None


# ------------------------------------------------------------------------------------------------ which models
@dataclass(frozen=True)
class ModelChoice:
    key: str          # "builtin:shapes", "official:d16", "path:<vae>|<var>", "untrained:tiny"
    label: str


def builtin_names() -> list[str]:
    builtin = optional_module("builtin")
    if builtin is None:
        return []
    try:
        return list(builtin.list_builtin())
    except Exception:     # a broken install must not take the model picker down
        return []


def official_in_cache() -> list[int]:
    """Depths d16..d30 whose VAR file and the VAE file are both in the cache folder."""
    pretrained = optional_module("pretrained")
    if pretrained is None:
        return []
    try:
        if not pretrained.official_path("vae").exists():
            return []
        return [d for d in OFFICIAL_DEPTHS if pretrained.official_path(f"d{d}").exists()]
    except Exception:
        return []


def available_models(custom_paths: list[tuple[str, str]] | None = None) -> list[ModelChoice]:
    """Every model the picker offers now: built-in ones, official ones in the cache, paths the user gave, and an
    untrained tiny model (always there: it shows what the walkthrough looks like before any training)."""
    out = [ModelChoice(f"builtin:{n}", f"Built-in: {n}") for n in builtin_names()]
    out += [ModelChoice(f"official:d{d}", f"Official VAR-d{d} (ImageNet 256)") for d in official_in_cache()]
    for vae, var in custom_paths or []:
        out.append(ModelChoice(f"path:{vae}|{var}", f"From files: {Path(var).name}"))
    out.append(ModelChoice(UNTRAINED_TINY, "Untrained tiny (random weights)"))
    if os.environ.get("VARLITE_APP_DEV"):      # offline checks of the app with other configs (untrained weights)
        out += [ModelChoice(f"untrained:{p}", f"Untrained {p} (random weights, dev)") for p in ("shapes", "cifar10", "d16")
                if p in PRESETS]
    return out


# ------------------------------------------------------------------------------------------------ loading
GENERIC_SAMPLING = {"cfg": 1.5, "top_k": 0, "top_p": 0.0}
OFFICIAL_SAMPLING = {"cfg": 4.0, "top_k": 900, "top_p": 0.96}     # the official demo's settings

@dataclass
class LoadedModel:
    key: str
    name: str
    vqvae: VQVAE
    var: VAR
    source: str                   # where the weights came from, in words
    verified: str                 # verification status, in words
    class_names: list[str]
    card: str = ""                # markdown model card, when there is one
    files: list[str] = field(default_factory=list)
    sampling: dict = field(default_factory=dict)   # recommended cfg / top_k / top_p (the pages' defaults)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return tuple(self.var.patch_nums)

    @property
    def image_size(self) -> int:
        return self.vqvae.config.image_size

    @property
    def num_classes(self) -> int:
        return self.var.num_classes

    def class_label(self, i: int) -> str:
        if i == self.num_classes:
            return f"{i}: unconditional"
        name = self.class_names[i] if i < len(self.class_names) else ""
        return f"{i}: {name}" if name else f"class {i}"

    def default(self, name: str):
        """A recommended sampling setting (cfg, top_k, top_p), or the generic default."""
        value = self.sampling.get(name, GENERIC_SAMPLING[name])
        return min(int(value), self.var.config.vocab_size) if name == "top_k" else float(value)

    def param_counts(self) -> dict[str, int]:
        return {"VQVAE (tokenizer)": sum(p.numel() for p in self.vqvae.parameters()),
                "VAR (transformer)": sum(p.numel() for p in self.var.parameters())}


def _class_names_for(name: str, num_classes: int) -> list[str]:
    data = optional_module("data")
    if data is not None:
        try:
            if name == "shapes":
                from varlite.data.shapes import CLASS_NAMES
                return list(CLASS_NAMES)
            if name == "cifar10":
                from varlite.data.cifar10 import CLASSES
                return list(CLASSES)
        except ImportError:
            pass
    if name == "cifar10":
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return [""] * num_classes


def _describe_source(model: torch.nn.Module, default: str) -> tuple[str, str]:
    src = getattr(model, "source", None)
    if isinstance(src, dict):
        verified = "verified: every tensor name and shape matches the expected layout" if src.get("verified") \
            else "not verified"
        return f"{src.get('what', default)} (layout: {src.get('layout', '?')})", verified
    return default, "not verified"


@st.cache_resource(show_spinner="Loading the model (once per server)...", max_entries=4)
def load_model(key: str) -> LoadedModel:
    """Build or load a model by picker key. Raises (with a clear message) when it cannot; callers show the error."""
    kind, _, rest = key.partition(":")
    torch.manual_seed(0)
    if kind == "untrained":
        preset = get_preset(rest)
        vqvae = VQVAE(preset.vqvae).eval()
        var = VAR(preset.var, vqvae).eval()
        var.init_weights()
        return LoadedModel(key, f"untrained {rest}", vqvae, var, f"random initialisation of the `{rest}` preset "
                           "(torch seed 0)", "nothing to verify: untrained", _class_names_for(rest, var.num_classes))
    if kind == "builtin":
        builtin = optional_module("builtin")
        if builtin is None:
            raise RuntimeError("this version of varlite has no built-in weights (varlite.builtin is missing)")
        vqvae, var = builtin.load_builtin(rest)
        card = ""
        try:
            card = builtin.model_card(rest)
        except Exception:
            pass
        source, verified = _describe_source(var, f"weights shipped with varlite (`varlite/weights/{rest}.pth`)")
        if verified == "not verified":
            verified = "loaded strictly: every tensor of the preset present, with its shape (torch.load weights_only)"
        sampling = {}
        if hasattr(builtin, "sampling_defaults"):
            try:
                sampling = dict(builtin.sampling_defaults(rest))
            except Exception:      # an older file without recommendations: the generic defaults
                sampling = {}
        return LoadedModel(key, rest, vqvae.eval(), var.eval(), source, verified,
                           _class_names_for(rest, var.num_classes), card, sampling=sampling)
    if kind in ("official", "path"):
        pretrained = optional_module("pretrained")
        if pretrained is None:
            raise RuntimeError("this version of varlite cannot load official checkpoints (varlite.pretrained missing)")
        if kind == "official":
            depth = int(rest.lstrip("d"))
            vqvae, var = pretrained.load_official(depth)
            files = [str(pretrained.official_path("vae")), str(pretrained.official_path(f"d{depth}"))]
            name = f"VAR-d{depth}"
        else:
            vae_path, var_path = rest.split("|", 1)
            vqvae = pretrained.load_vqvae(vae_path)
            var = pretrained.load_var(var_path, vqvae)
            files, name = [vae_path, var_path], Path(var_path).stem
        source, verified = _describe_source(var, "official checkpoint")
        return LoadedModel(key, name, vqvae.eval(), var.eval(), source, verified,
                           imagenet_class_names(var.num_classes), "", files, OFFICIAL_SAMPLING)
    raise ValueError(f"unknown model key {key!r}")


def imagenet_class_names(num_classes: int) -> list[str]:
    """ImageNet names, when the library ships them; else numbers only."""
    pretrained = optional_module("pretrained")
    names = getattr(pretrained, "IMAGENET_CLASSES", None) if pretrained else None
    if names is not None and len(names) == num_classes:
        return list(names)
    return [""] * num_classes


def friendly_error(err: BaseException) -> str:
    """One paragraph for the page: what went wrong and (from the library's message) what to do."""
    name = type(err).__name__
    if isinstance(err, FileNotFoundError):
        return (f"A file is missing: {err}. Download the official weights on the **Models** page "
                f"(or `python -m varlite download d16`), or give the paths of files you have.")
    return f"{name}: {err}"


# ------------------------------------------------------------------------------------------------ generation
@dataclass(frozen=True)
class GenSettings:
    """Everything a generation depends on; hashable, so it keys the caches."""
    model_key: str
    label: int
    seed: int = 0
    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    smooth: bool = False

    def args(self) -> dict:
        return dict(cfg=float(self.cfg), top_k=int(self.top_k), top_p=float(self.top_p),
                    more_smooth=bool(self.smooth), seed=int(self.seed))


def to_uint8_images(images_B3HW: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 for display."""
    return images_B3HW.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def validate(settings: GenSettings) -> None:
    """Raise ValueError with the library's explanation if the settings are invalid for the model."""
    var = load_model(settings.model_key).var
    var.check_labels([settings.label])
    var.check_sampling_args(settings.cfg, settings.top_k, settings.top_p)


def _decode_all(var: VAR, f_hats: list[torch.Tensor], progress: Callable | None, start: float) -> np.ndarray:
    """Decode every scale's f_hat (in chunks, so the progress bar moves) -> (K, H, W, 3) uint8."""
    K, out = len(f_hats), []
    chunk = 1 if f_hats[0].shape[-1] >= 16 else K       # official models: one image at a time
    for i in range(0, K, chunk):
        out.append(to_uint8_images(var.decode_f_hat(torch.cat(f_hats[i:i + chunk]))))
        if progress:
            progress(start + (1 - start) * min(i + chunk, K) / K, f"decoding scale images {min(i + chunk, K)}/{K}")
    return np.concatenate(out)


def _steps_to_dict(steps, images_KHW3: np.ndarray, overrides_used: bool = False) -> dict:
    scales = []
    for st_, img in zip(steps, images_KHW3):
        scales.append(dict(
            scale=st_.scale, side=st_.side, cfg=float(st_.cfg), begin=st_.begin, end=st_.end,
            tokens=st_.tokens[0].numpy().astype(np.int32),
            token_prob=None if st_.token_prob is None else st_.token_prob[0].numpy().astype(np.float32),
            entropy=None if st_.entropy is None else st_.entropy[0].numpy().astype(np.float32),
            topk_tokens=None if st_.topk_tokens is None else st_.topk_tokens[0].numpy().astype(np.int32),
            topk_probs=None if st_.topk_probs is None else st_.topk_probs[0].numpy().astype(np.float32),
            embedding=st_.embedding[0].numpy().astype(np.float32),
            residual=st_.residual[0].numpy().astype(np.float32),
            f_hat=st_.f_hat[0].numpy().astype(np.float32),
            image=img, timings=dict(st_.timings),
            attention=None if st_.attention is None else
            np.stack([w[0].float().numpy() for w in st_.attention]).astype(np.float16)))   # (layers, heads, l, Lk)
    last = steps[-1]
    return dict(scales=scales, patch_nums=[s["side"] for s in scales], total_tokens=last.total_tokens,
                num_scales=last.num_scales, overrides=overrides_used)


def compute_trace(settings: GenSettings, progress: Callable[[float, str], None] | None = None) -> dict:
    """Run ``generate_steps`` once for these settings and keep every scale as numpy (images decoded here, once)."""
    var = load_model(settings.model_key).var
    steps, K = [], len(var.patch_nums)
    capture = attention_bytes(var) <= ATTENTION_IN_TRACE_BYTES
    for step in var.generate_steps([settings.label], trace=True, capture_attention=capture, **settings.args()):
        steps.append(step)
        if progress:
            progress(0.5 * (step.scale + 1) / K, f"generating scale {step.scale + 1}/{K} ({step.side}x{step.side})")
    images = _decode_all(var, [s.f_hat for s in steps], progress, 0.5)
    return _steps_to_dict(steps, images)


@st.cache_data(show_spinner="Generating...", max_entries=256, max_size="2GB", ttl=3600)
def generation_trace(settings: GenSettings, _precomputed: dict | None = None) -> dict:
    """The trace of ``settings``, shared by all sessions. ``_precomputed`` (not part of the key) stores a trace that
    was computed outside the cache with a progress bar (Streamlit elements cannot be updated inside a cached
    function); a plain call computes it here."""
    return _precomputed if _precomputed is not None else compute_trace(settings)


_COMPUTED: set[GenSettings] = set()      # settings already stored in generation_trace's cache by this process


def trace_with_progress(settings: GenSettings, progress: Callable[[float, str], None]) -> dict:
    """generation_trace(settings), computed with progress reports the first time (if evicted since, with a spinner)."""
    if settings in _COMPUTED:
        return generation_trace(settings)
    trace = generation_trace(settings, _precomputed=compute_trace(settings, progress))
    _COMPUTED.add(settings)
    return trace


ATTENTION_IN_TRACE_BYTES = 8_000_000     # small models keep every scale's attention in the trace (float16)


def attention_bytes(var: VAR) -> int:
    """float16 bytes of every scale's attention (conditional rows) for one image: depth x heads x sum_k l_k L_k."""
    return 2 * var.config.depth * var.config.num_heads * sum(
        (e - b) * e for b, e in var.config.begin_ends)


@st.cache_data(show_spinner="Capturing attention...", max_entries=512, ttl=3600)
def attention_at(settings: GenSettings, scale: int, row: int, col: int) -> np.ndarray:
    """(layers, heads, end) attention of the token at (row, col) of ``scale`` over every token it can see.

    Small models keep it in the trace; for large ones (a 16-layer model would need ~150 MB per trace) generation
    is re-run with attention capture up to ``scale`` (same seed, so the same tokens) and one row is kept."""
    s = generation_trace(settings)["scales"][scale]
    if s.get("attention") is not None:
        return s["attention"][:, :, row * s["side"] + col].astype(np.float32)
    var = load_model(settings.model_key).var
    for step in var.generate_steps([settings.label], capture_attention=True, **settings.args()):
        if step.scale == scale:
            i = row * step.side + col
            return np.stack([w[0, :, i, :].float().numpy() for w in step.attention])
    raise ValueError(f"scale {scale} does not exist")


@st.cache_data(show_spinner=False, max_entries=256, ttl=3600)
def timing_table(settings: GenSettings) -> list[dict]:
    tr = generation_trace(settings)
    return [dict(scale=s["scale"] + 1, side=f"{s['side']}x{s['side']}", tokens=s["side"] ** 2,
                 **{f"{k} (ms)": round(v * 1000, 2) for k, v in s["timings"].items()}) for s in tr["scales"]]


# ------------------------------------------------------------------------------------------------ images
class ImageInputError(ValueError):
    """An uploaded file that is not a usable image (with a message that says why)."""


def read_image_bytes(data: bytes, name: str = "upload"):
    """bytes -> PIL image, refusing non-images, oversized files and decompression bombs with a clear message."""
    from PIL import Image, UnidentifiedImageError
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise ImageInputError(f"{name} is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB. "
                              f"Resize it first (the model only sees a small square anyway).")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageInputError(f"{name} is {img.width}x{img.height} pixels; the limit is "
                                  f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.")
        img.load()
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as err:
        raise ImageInputError(f"{name} is not an image this app can read (PNG, JPEG, BMP, GIF, WebP...): {err}") from err
    return img


def sample_names(model: LoadedModel) -> list[str]:
    """Built-in samples for the Encode/Edit pages: dataset images for built-in models, scikit-image photos for all."""
    names = []
    if model.name in ("shapes", "untrained shapes") or model.key == UNTRAINED_TINY:
        names += [f"shapes: {c}" for c in _class_names_for("shapes", 10)]
    if model.name == "cifar10" and _cifar10_available():
        names += [f"cifar10 test image {i}" for i in range(10)]
    names += [f"photo: {n}" for n in ("astronaut", "coffee", "chelsea", "rocket")]
    return names


def _cifar10_available() -> bool:
    try:
        from varlite.data import find_cifar10
        find_cifar10()
        return True
    except Exception:       # not downloaded: the photos remain
        return False


@st.cache_data(show_spinner=False, max_entries=64)
def sample_image_png(sample: str, size: int) -> bytes:
    """A built-in sample as PNG bytes (same path as an upload afterwards)."""
    from PIL import Image
    kind, _, what = sample.partition(": ")
    if kind == "shapes":
        from varlite.data.shapes import CLASS_NAMES, Shapes
        label = list(CLASS_NAMES).index(what)
        u8 = Shapes(n=label + 1, image_size=size, split="test").images_u8[label]
        arr = u8.permute(1, 2, 0).numpy()
    elif sample.startswith("cifar10 test image"):
        from varlite.data import CIFAR10
        arr = CIFAR10(split="test").images_u8[int(sample.rsplit(" ", 1)[1])].permute(1, 2, 0).numpy()
    elif kind == "photo":
        import skimage.data
        arr = getattr(skimage.data, what)()
    else:
        raise ValueError(f"unknown sample {sample!r}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def prepared_image(model: LoadedModel, data: bytes, name: str) -> tuple[torch.Tensor, list[str]]:
    from varlite.images import prepare_image
    return prepare_image(read_image_bytes(data, name), model.image_size)


@st.cache_data(show_spinner="Encoding, and decoding every prefix of scales...", max_entries=64, ttl=3600)
def encode_trace(model_key: str, data: bytes, name: str) -> dict:
    """``VQVAE.encode_steps`` of an image (bytes), every scale as numpy, with PSNR and residual norms."""
    model = load_model(model_key)
    x, notes = prepared_image(model, data, name)
    scales = []
    for s in model.vqvae.encode_steps(x):
        scales.append(dict(
            scale=s.scale, side=s.side, tokens=s.tokens[0].numpy().astype(np.int32),
            target=s.target[0].numpy().astype(np.float32), embedding=s.embedding[0].numpy().astype(np.float32),
            residual=s.residual[0].numpy().astype(np.float32), f_hat=s.f_hat[0].numpy().astype(np.float32),
            remaining=s.remaining[0].numpy().astype(np.float32), remaining_norm=float(s.remaining_norm[0]),
            codes_used=s.codes_used, vocab_size=s.vocab_size, psnr=float(s.psnr()[0]),
            image=to_uint8_images(s.image())[0]))
    return dict(scales=scales, notes=notes, input=to_uint8_images(x.add(1).mul(0.5))[0])


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:12]


def lesson_links(*keywords: str) -> str:
    """Markdown pointing at the lessons whose file names contain a keyword (or at the folder)."""
    found = []
    if LESSONS_DIR.is_dir():
        for nb in sorted(LESSONS_DIR.glob("*.ipynb")):
            if any(k.lower() in nb.stem.lower() for k in keywords):
                found.append(f"`lessons/{nb.name}`")
    where = " (open them with `jupyter lab lessons/`)"
    return ("Lessons: " + ", ".join(found) + where) if found else "Lessons: the notebooks in `lessons/`" + where


def asdict_config(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


# ------------------------------------------------------------------------------------------------ editing
EDIT_OPS = {
    "inpaint": "In-painting: regenerate the box, keep the rest",
    "outpaint": "Out-painting: keep the box, regenerate around it",
    "class": "Class editing: regenerate the box as another class",
    "surgery": "Token surgery: paint tokens at one scale, regenerate the finer scales",
}


@dataclass(frozen=True)
class EditRequest:
    """Everything an edit depends on (hashable: it keys the cache)."""
    model_key: str
    op: str
    box: tuple[float, float, float, float]          # y0, x0, y1, x1 as fractions of the image
    label: int                                      # class for the generated part (num_classes = unconditional)
    seed: int = 0
    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    surgery_scale: int = 0
    surgery_token: int = 0
    source_settings: GenSettings | None = None      # source = this generation ...
    source_image: bytes | None = None               # ... or this image
    source_name: str = ""


def _source_for_edit(req: EditRequest, var: VAR):
    """The edit source: token maps of a generation, or the prepared image batch."""
    if req.source_settings is not None:
        return [torch.from_numpy(s["tokens"]).long() for s in generation_trace(req.source_settings)["scales"]]
    model = load_model(req.model_key)
    return prepared_image(model, req.source_image, req.source_name)[0]


@st.cache_data(show_spinner=False, max_entries=128, ttl=3600)
def edit_result(req: EditRequest) -> dict:
    """Run one edit with ``varlite.editing`` and keep the before / after images, the mask and every scale's image."""
    editing = optional_module("editing")
    if editing is None:
        raise RuntimeError("this version of varlite has no editing module (varlite.editing)")
    var = load_model(req.model_key).var
    sampling = dict(cfg=float(req.cfg), top_k=int(req.top_k), top_p=float(req.top_p), seed=int(req.seed))
    source = _source_for_edit(req, var)
    H = var.patch_nums[-1]
    box_HW = editing.box_mask(H, *req.box)
    if req.op == "inpaint":
        res = editing.inpaint(var, source, box_HW, req.label, **sampling)
    elif req.op == "outpaint":
        res = editing.outpaint(var, source, box_HW, req.label, **sampling)
    elif req.op == "class":
        res = editing.edit_class(var, source, box_HW, req.label, **sampling)
    elif req.op == "surgery":
        k = int(req.surgery_scale)
        tokens = editing.image_tokens(var.vqvae, source) if isinstance(source, torch.Tensor) else list(source)
        tokens = [t.reshape(-1, var.patch_nums[i], var.patch_nums[i]) for i, t in enumerate(tokens)]
        box_k = editing.box_mask(var.patch_nums[k], *req.box)
        painted = torch.where(box_k, torch.tensor(int(req.surgery_token)), tokens[k])
        new_tokens = {i: tokens[i] for i in range(k)} | {k: painted}
        overrides = editing.make_overrides(var, new_tokens, True)
        res = editing.generate_with_overrides(var, req.label, overrides, **sampling)
        with torch.inference_mode():
            source_f_hat = var.vqvae.quantize.idx_to_f_hats([t.flatten(1) for t in tokens])[-1]
        res.source_f_hat = source_f_hat
        box_HW = box_k
    else:
        raise ValueError(f"unknown edit {req.op!r}; choose one of {list(EDIT_OPS)}")
    # small models: every scale's image for the strip; official ones (a decode takes seconds): the result only
    f_hats = [s.f_hat for s in res.steps] if var.vqvae.config.image_size <= 64 else [res.steps[-1].f_hat]
    images = _decode_all(var, f_hats, None, 0.0)
    keep = [m[0].numpy() for m in res.keep]
    return dict(before=to_uint8_images(res.source_image())[0], after=images[-1],
                steps=list(images) if len(images) == len(res.steps) else None,
                keep=keep, box=box_HW.numpy(), tokens=[t[0].numpy() for t in res.tokens])


# ------------------------------------------------------------------------------------------------ steps for viz
def trace_steps(trace: dict, model: LoadedModel) -> list:
    """Cached generation or encoding traces back as step-like objects (batch of 1, torch tensors) for
    ``varlite.viz``'s figures."""
    from types import SimpleNamespace
    V = model.var.config.vocab_size
    out = []
    for s in trace["scales"]:
        def t(x):
            return None if x is None else torch.from_numpy(np.asarray(x)).unsqueeze(0)
        image = torch.from_numpy(s["image"]).permute(2, 0, 1).float().div(255).unsqueeze(0)
        out.append(SimpleNamespace(
            scale=s["scale"], side=s["side"], cfg=s.get("cfg"), begin=s.get("begin"), end=s.get("end"),
            tokens=t(s["tokens"]).long(), token_prob=t(s.get("token_prob")), entropy=t(s.get("entropy")),
            topk_tokens=t(s.get("topk_tokens")), topk_probs=t(s.get("topk_probs")), embedding=t(s["embedding"]),
            residual=t(s["residual"]), f_hat=t(s["f_hat"]), remaining=t(s.get("remaining")),
            logits=SimpleNamespace(shape=(1, s["side"] ** 2, V)), attention=None, timings=s.get("timings", {}),
            image=(lambda im=image: im)))
    return out


def attention_rows(att_nLnHLk: np.ndarray, side: int, row: int, col: int) -> list[torch.Tensor]:
    """One position's attention (layers, heads, Lk) as per-layer (1, heads, l, Lk) tensors in which only that
    position's row is meaningful (an expanded view: no l x Lk copy), the layout ``viz.attention_figure`` reads."""
    n_layers, n_heads, Lk = att_nLnHLk.shape
    return [torch.from_numpy(np.ascontiguousarray(att_nLnHLk[i])).view(1, n_heads, 1, Lk).expand(1, n_heads, side * side, Lk)
            for i in range(n_layers)]
