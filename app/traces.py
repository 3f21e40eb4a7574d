"""Generation and encoding traces: computed once, shared by every session, with a bound on memory.

Generation: a ``GenerationRun`` runs ``VAR.generate_steps`` in a worker thread and keeps every scale's step,
detached (``ScaleStep.detached``: CPU tensors, no reference to the model), the moment it is computed; a page shows
scale 1 while the later scales are still being computed, and never waits for more scales than it displays. A
prefix image is decoded only when a page displays it, once, and kept in the run (``GenerationRun.image``).

Bounds:
- ``TraceStore`` (one per server, ``st.cache_resource``): the most recently used runs, at most ``MAX_RUNS`` of them
  and at most ``MAX_STORE_BYTES`` of tensors and images together; the least recently used go first (an unfinished
  one is stopped after its current scale).
- ``encode_trace``: ``st.cache_data``, at most 16 images, each kept for an hour at most.
- ``attention_at``: ``st.cache_data``, at most 256 positions, an hour at most.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st
import torch

from app import inputs
from app.loaders import LoadedModel, load_model
from varlite.complexity import attention_capture_bytes
from varlite.images import prepare_image
from varlite.core.trace import EncodeStep, ScaleStep

MAX_RUNS = 64
MAX_STORE_BYTES = 768 * 2**20
ATTENTION_IN_TRACE_BYTES = 8_000_000     # small models keep every scale's attention in the trace
WORKERS = 2                              # generations computed at the same time (each uses torch's threads)
DECODE_ALL_UP_TO = 64                    # models with images up to this side decode every scale at once (cheap)


def streams(model) -> bool:
    """A large model (images above DECODE_ALL_UP_TO px, e.g. d16 at 256 px) streams on the Generate page: each
    scale is drawn as soon as it is computed and a prefix image is decoded (seconds on a CPU) only when shown."""
    return model.image_size > DECODE_ALL_UP_TO


@dataclass(frozen=True)
class GenSettings:
    """Everything a generation depends on; hashable, so it keys the store and the figure caches."""
    model_key: str
    label: int
    seed: int = 0
    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    smooth: bool = False

    def args(self) -> dict:
        """Keyword arguments of ``VAR.generate_steps``."""
        return dict(cfg=float(self.cfg), top_k=int(self.top_k), top_p=float(self.top_p),
                    more_smooth=bool(self.smooth), seed=int(self.seed))


def validate(model: LoadedModel, settings: GenSettings) -> None:
    """Raise ValueError with the library's explanation if the settings are invalid for the model."""
    model.var.check_labels([settings.label])
    model.var.check_sampling_args(settings.cfg, settings.top_k, settings.top_p)


def to_uint8(images_B3HW: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 for display."""
    return images_B3HW.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def keeps_attention(model: LoadedModel) -> bool:
    """Whether a trace of this model records every scale's attention (small models: at most 8 MB per image)."""
    return sum(attention_capture_bytes(model.var.config)) <= ATTENTION_IN_TRACE_BYTES


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(i) for i in x)
    return 0


class GenerationRun:
    """One generation of one ``GenSettings``, filled scale by scale by a worker thread."""

    def __init__(self, settings: GenSettings, model: LoadedModel):
        self.settings = settings
        self.num_scales = len(model.patch_nums)
        self.steps: list[ScaleStep] = []           # detached, one per computed scale
        self.ready_s: list[float] = []             # seconds from the start until each scale was computed
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._images: dict[int, np.ndarray] = {}
        self._decode_lock = threading.Lock()

    # ------------------------------------------------------------------ worker side
    def compute(self, model: LoadedModel) -> None:
        """Run the generation loop, publishing each scale as soon as it exists (called in a worker thread)."""
        start = time.perf_counter()
        try:
            steps = model.var.generate_steps([self.settings.label], capture_attention=keeps_attention(model),
                                             **self.settings.args())
            for step in steps:
                detached = step.detached(decode=False)
                with self._changed:
                    self.steps.append(detached)
                    self.ready_s.append(time.perf_counter() - start)
                    self._changed.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as err:      # noqa: BLE001 -- handed to the page, which explains it
            self.error = err
        finally:
            with self._changed:
                self.done.set()
                self._changed.notify_all()

    def stop(self) -> None:
        """Stop after the scale being computed (the run was evicted)."""
        self._stop.set()

    # ------------------------------------------------------------------ page side
    @property
    def complete(self) -> bool:
        return len(self.steps) == self.num_scales

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Wait until at least ``count`` scales are computed (or the run ended, or ``timeout_s`` passed); return
        whether they are there. Pages wait in short slices so that a click can interrupt them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.steps) >= count or self.done.is_set(), timeout=timeout_s)
            return len(self.steps) >= count

    def image(self, si: int, model: LoadedModel) -> np.ndarray:
        """(Hi, Wi, 3) uint8: the image decoded from f_hat after scale ``si`` (0-based); decoded on first request
        (by whichever session asks first), then kept."""
        with self._decode_lock:
            if si not in self._images:
                with torch.inference_mode():
                    f_hat = self.steps[si].f_hat.to(model.device)
                    self._images[si] = to_uint8(model.vqvae.decode_f_hat(f_hat).cpu())[0]
            return self._images[si]

    def decoded(self) -> dict[int, np.ndarray]:
        """The images decoded so far, by scale (a copy)."""
        with self._decode_lock:
            return dict(self._images)

    def step_with_image(self, si: int, model: LoadedModel) -> ScaleStep:
        """Step ``si`` with its image attached (what ``varlite.viz.pyramid_figure`` draws)."""
        image = torch.from_numpy(self.image(si, model)).permute(2, 0, 1).float().div(255).unsqueeze(0)
        return replace(self.steps[si], _image=image)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes([s.tokens, s.embedding, s.contribution, s.f_hat, s.logits, s.raw_logits, s.attention or []])
                   for s in list(self.steps)) + sum(im.nbytes for im in self.decoded().values())


class TraceStore:
    """The generation runs of this server, least recently used first (see the module docstring for the bound)."""

    def __init__(self, max_runs: int = MAX_RUNS, max_bytes: int = MAX_STORE_BYTES):
        self.max_runs, self.max_bytes = max_runs, max_bytes
        self._runs: OrderedDict[GenSettings, GenerationRun] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="varlite-generate")

    def run(self, settings: GenSettings, model: LoadedModel) -> GenerationRun:
        """The run of ``settings``: the stored one, or a new one started in a worker thread."""
        with self._lock:
            run = self._runs.get(settings)
            if run is not None and run.error is None:
                self._runs.move_to_end(settings)
                return run
            run = GenerationRun(settings, model)
            self._runs[settings] = run
            self._pool.submit(run.compute, model)
            self._evict()
            return run

    def _evict(self) -> None:
        total = sum(r.nbytes for r in self._runs.values())
        while len(self._runs) > 1 and (len(self._runs) > self.max_runs or total > self.max_bytes):
            _, old = self._runs.popitem(last=False)
            old.stop()
            total -= old.nbytes

    def clear(self) -> None:
        """Forget every run (stopping unfinished ones)."""
        with self._lock:
            for run in self._runs.values():
                run.stop()
            self._runs.clear()

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._runs.values())


@st.cache_resource
def trace_store() -> TraceStore:
    """The server's one ``TraceStore``, shared by every session."""
    return TraceStore()


def generation(settings: GenSettings) -> GenerationRun:
    """The (possibly still running) generation of ``settings``."""
    return trace_store().run(settings, load_model(settings.model_key))


def finished_generation(settings: GenSettings) -> GenerationRun:
    """The generation of ``settings``, waited for until every scale is computed; raises its error if it failed."""
    run = generation(settings)
    run.done.wait()
    if run.error is not None:
        raise run.error
    return run


# ------------------------------------------------------------------------------------------------ attention
@st.cache_data(show_spinner="Capturing attention...", max_entries=256, ttl=3600)
def attention_at(settings: GenSettings, si: int, row: int, col: int) -> np.ndarray:
    """(layers, heads, end) float32: the attention of the token at (row, col) of scale ``si`` over every token it
    can see. Small models keep it in the trace; for larger ones generation is re-run with attention capture up to
    scale ``si`` (same seed, so the same tokens) and only this row is kept."""
    step = finished_generation(settings).steps[si]
    i = row * step.pn + col
    if step.attention is None:
        model = load_model(settings.model_key)
        for live in model.var.generate_steps([settings.label], capture_attention=True, **settings.args()):
            if live.scale == si:
                step = live
                break
    return np.stack([w[0, :, i, :].float().cpu().numpy() for w in step.attention])


def step_with_attention_row(step: ScaleStep, att_nLnHLk: np.ndarray, row: int, col: int) -> ScaleStep:
    """``step`` with one position's attention (layers, heads, Lk) as per-layer (1, heads, l, Lk) tensors in which
    only that position's row is meaningful (an expanded view, no l x Lk copy): what ``viz.attention_figure`` reads."""
    n_layers, n_heads, Lk = att_nLnHLk.shape
    l = step.pn * step.pn
    rows = [torch.from_numpy(np.ascontiguousarray(att_nLnHLk[i])).view(1, n_heads, 1, Lk).expand(1, n_heads, l, Lk)
            for i in range(n_layers)]
    return replace(step, attention=rows)


# ------------------------------------------------------------------------------------------------ encoding
@dataclass
class EncodeTrace:
    steps: list[EncodeStep]          # detached, images decoded
    notes: list[str]                 # what was done to the image to fit the model (converted, cropped, resized)
    input: np.ndarray                # (S, S, 3) uint8: what the tokenizer saw


@st.cache_data(show_spinner="Encoding, and decoding every prefix of scales...", max_entries=16, ttl=3600)
def encode_trace(model_key: str, data: bytes, name: str) -> EncodeTrace:
    """``VQVAE.encode_steps`` of an image (bytes), every step detached (its prefix image decoded)."""
    model = load_model(model_key)
    x_13SS, notes = prepare_image(inputs.read_image_bytes(data, name), model.image_size)
    steps = [step.detached() for step in model.vqvae.encode_steps(x_13SS.to(model.device))]
    return EncodeTrace(steps, notes, to_uint8(x_13SS.add(1).mul(0.5))[0])
