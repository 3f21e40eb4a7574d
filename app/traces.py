"""Generation and encoding traces: computed once, shared by every session, with a bound on memory.

Generation: a ``GenerationRun`` is one image's generation (one ``GenSettings``), filled scale by scale: every scale's
step, detached (``ScaleStep.detached``: CPU tensors, no reference to the model), is kept the moment it is computed,
so a page shows scale 1 while the later scales are still being computed. Runs are computed by the server's one
``Scheduler`` (app/scheduler.py): a queue per model, whose waiting requests run as one batch through
``VAR.generate_steps`` (``compute_batch``: row b of a batch is exactly the solo run of its settings). A prefix image
is decoded only when a page shows it, once, and kept in the run; a large model's prefixes (seconds each) are decoded
in a background thread (``Decoder``), so that a page never blocks on one.

Who wants a run: its owners, the sessions that asked for it. The Generate page asks for its runs with
``generations`` (A, and B when comparing), which supersedes that session's previous request: a run no live session
wants any more is cancelled at its next scale boundary (dropped from its batch, or its solo run stopped), and one
still queued never starts. A closed browser tab is a session that Streamlit no longer counts as active
(``Runtime.is_active_session``: false from the moment its websocket disconnects): its runs are cancelled the same
way. A cancelled run keeps the scales it has; asked for again, it is queued again, and its batch recomputes the
missing ones (the earlier ones come out identical and are not published twice).

Bounds:
- ``TraceStore`` (one per server, ``st.cache_resource``): the most recently used runs, at most ``MAX_RUNS`` of them
  and at most ``MAX_STORE_BYTES`` of tensors and images together, counted as a run grows (every scale, every decoded
  image); the least recently used go first. A run that a live session is waiting for is never evicted (a session
  waits for at most MAX_WANTED: its new request supersedes the old one), so the bound holds for everything else.
- ``encode_trace``: ``st.cache_data``, at most 16 images, each kept for an hour at most.
- ``attention_at``: ``st.cache_data``, at most 256 positions, an hour at most.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st
import torch
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app import inputs
from app.loaders import LoadedModel, load_model
from app.prefix_decoder import Decoder
from app.scheduler import Place, Scheduler
from varlite.complexity import attention_capture_bytes
from varlite.core.trace import EncodeStep, ScaleStep
from varlite.images import prepare_image

MAX_RUNS = 64
MAX_STORE_BYTES = 768 * 2**20
ATTENTION_IN_TRACE_BYTES = 8_000_000     # small models keep every scale's attention in the trace
DECODE_ALL_UP_TO = 64                    # models with images up to this side decode every scale at once (cheap)
BATCH_KV_BYTES = 2**30                   # a batch holds at most this much KV cache (d16: 6 rows of 178 MB)
MAX_BATCH_ROWS = 32
MAX_WANTED = 4                           # the runs one session may be waiting for at once (the newest kept)


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
        """Keyword arguments of ``VAR.generate_steps`` for this generation alone."""
        return dict(cfg=float(self.cfg), top_k=int(self.top_k), top_p=float(self.top_p),
                    more_smooth=bool(self.smooth), seed=int(self.seed))


def batch_args(rows: list[GenSettings]) -> dict:
    """Keyword arguments of ``VAR.generate_steps`` for several generations as one batch: one cfg, top-k, top-p and
    seed per row (the library gives row b exactly the tokens of ``generate_steps([label_b], **rows[b].args())``);
    smoothing is one value for the batch (``GenerationRun.batch_key``)."""
    return dict(cfg=[float(s.cfg) for s in rows], top_k=[int(s.top_k) for s in rows],
                top_p=[float(s.top_p) for s in rows], seed=[int(s.seed) for s in rows],
                more_smooth=bool(rows[0].smooth))


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


def max_batch_rows(model: LoadedModel) -> int:
    """How many images of this model one batch may hold: its KV cache (keys and values of every layer, for the
    conditional and the unconditional row of each image, float32) stays within BATCH_KV_BYTES."""
    config = model.var.config
    per_row = 2 * 2 * model.var.L * config.embed_dim * config.depth * 4
    return int(max(1, min(MAX_BATCH_ROWS, BATCH_KV_BYTES // per_row)))


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(i) for i in x)
    return 0


def step_nbytes(step: ScaleStep) -> int:
    return _nbytes([step.tokens, step.embedding, step.contribution, step.f_hat, step.logits, step.raw_logits,
                    step.attention or []])


# ------------------------------------------------------------------------------------------------ sessions
def session_id() -> str | None:
    """The id of the browser session running this script (None outside a script run: tests, benches)."""
    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None else None


def session_alive(owner: str | None) -> bool:
    """Whether the session ``owner`` is still connected: Streamlit's runtime counts a session as active until its
    websocket disconnects (a closed tab). No owner (a script outside a session) and no runtime (AppTest) count as
    alive."""
    return owner is None or not runtime.exists() or runtime.get_instance().is_active_session(owner)


# ------------------------------------------------------------------------------------------------ a run
class GenerationRun:
    """One generation of one ``GenSettings``, filled scale by scale by the scheduler's batches; a job of the
    scheduler (its lane is the model, its batch key the model and the smoothing)."""

    def __init__(self, settings: GenSettings, model: LoadedModel):
        self.settings = settings
        self.num_scales = len(model.patch_nums)
        self.steps: list[ScaleStep] = []           # detached, one per computed scale
        self.ready_s: list[float] = []             # seconds from its first batch's start until each scale existed
        self.error: BaseException | None = None
        self.done = threading.Event()              # every scale computed, or failed
        self.owners: set[str | None] = set()       # the sessions that asked for it (None: no session)
        self.evicted = False
        self.started: float | None = None          # time.perf_counter() when its first batch started
        self.nbytes = 0                            # its tensors and images, counted as they come
        self.lane, self.batch_key = settings.model_key, (settings.model_key, id(model), settings.smooth)
        self.max_rows, self.gathers = max_batch_rows(model), streams(model)
        self.model = weakref.ref(model)            # no strong reference: an unloaded model is freed
        self.on_grow = lambda: None                # the store's bound, checked as the run grows
        self._changed = threading.Condition()
        self._images: dict[int, np.ndarray] = {}
        self._decoding: dict[int, threading.Event] = {}    # scales being decoded now, set when done
        self._images_lock = threading.Lock()               # held for bookkeeping only, never during a decode

    @staticmethod
    def compute(batch: list[GenerationRun], scheduler: Scheduler) -> None:
        compute_batch(batch, scheduler)

    # ------------------------------------------------------------------ the scheduler's side
    def wanted(self) -> bool:
        """Whether it is still to be computed: not complete, not evicted, and asked for by a live session."""
        return (not self.done.is_set() and not self.evicted
                and any(session_alive(owner) for owner in list(self.owners)))

    def publish(self, step: ScaleStep) -> None:
        """Keep a newly computed scale (a scale it has already, recomputed by a restarted batch, is skipped)."""
        with self._changed:
            if step.scale != len(self.steps):
                return
            self.steps.append(step)
            self.ready_s.append(time.perf_counter() - self.started)
            self.nbytes += step_nbytes(step)
            if self.complete:
                self.done.set()
            self._changed.notify_all()
        self.on_grow()

    def fail(self, err: BaseException) -> None:
        with self._changed:
            self.error = err
            self.done.set()
            self._changed.notify_all()

    # ------------------------------------------------------------------ page side
    @property
    def complete(self) -> bool:
        return len(self.steps) == self.num_scales

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Wait until at least ``count`` scales are computed (or the run ended, or ``timeout_s`` passed); return
        whether they are there."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.steps) >= count or self.done.is_set(), timeout=timeout_s)
            return len(self.steps) >= count

    def image(self, si: int, model: LoadedModel) -> np.ndarray:
        """(Hi, Wi, 3) uint8: the image decoded from f_hat after scale ``si`` (0-based); decoded on first request
        (by whichever session or the decoder thread asks first; another asking meanwhile waits for that one), then
        kept. No lock is held while decoding (seconds for d16), so ``decoded()`` always answers at once."""
        while True:
            with self._images_lock:
                if si in self._images:
                    return self._images[si]
                underway = self._decoding.get(si)
                if underway is None:
                    underway = self._decoding[si] = threading.Event()
                    break
            underway.wait()                      # decoded by another thread (or failed there: then try here)
        try:
            with torch.inference_mode():
                f_hat = self.steps[si].f_hat.to(model.device)
                image = to_uint8(model.vqvae.decode_f_hat(f_hat).cpu())[0]
            with self._images_lock:
                self._images[si] = image
                self.nbytes += image.nbytes
        finally:
            with self._images_lock:
                del self._decoding[si]
            underway.set()
        self.on_grow()
        return image

    def decoded(self) -> dict[int, np.ndarray]:
        """The images decoded so far, by scale (a copy)."""
        with self._images_lock:
            return dict(self._images)

    def step_with_image(self, si: int, model: LoadedModel) -> ScaleStep:
        """Step ``si`` with its image attached (what ``varlite.viz.pyramid_figure`` draws)."""
        image = torch.from_numpy(self.image(si, model)).permute(2, 0, 1).float().div(255).unsqueeze(0)
        return replace(self.steps[si], _image=image)


def compute_batch(runs: list[GenerationRun], scheduler: Scheduler) -> None:
    """Compute ``runs`` (one model, one smoothing) as one batch through ``VAR.generate_steps``, publishing row b's
    step to runs[b] after every scale, until every scale is computed or the scheduler drops every row
    (``Scheduler.boundary``: rows nobody wants; a young batch may restart with rows joining or leaving)."""
    model = runs[0].model()
    rows = runs
    try:
        if model is None:
            raise RuntimeError("the model was unloaded before this generation could start: generate again")
        now = time.perf_counter()
        for run in runs:
            run.started = run.started or now
        while rows:
            labels = [run.settings.label for run in rows]
            steps = model.var.generate_steps(labels, capture_attention=keeps_attention(model),
                                             **batch_args([run.settings for run in rows]))
            restart = None
            for step in steps:
                regroup = scheduler.boundary(rows[0].lane, rows)
                detached = step.detached(decode=False)
                for b, run in enumerate(rows):
                    if any(run is live for live in regroup.live):
                        run.publish(detached.row(b))
                if regroup.restart is not None or not regroup.live:
                    restart = regroup.restart
                    break
            steps.close()
            rows = [run for run in restart or [] if not run.done.is_set()]
            for run in rows:
                run.started = run.started or time.perf_counter()
    except BaseException as err:      # noqa: BLE001 -- handed to the pages, which explain it
        for run in rows:
            run.fail(err)


# ------------------------------------------------------------------------------------------------ the store
class TraceStore:
    """The generation runs of this server, least recently used first, the scheduler that computes them and the
    decoder of their prefixes (see the module docstring for the bound)."""

    def __init__(self, max_runs: int = MAX_RUNS, max_bytes: int = MAX_STORE_BYTES):
        self.max_runs, self.max_bytes = max_runs, max_bytes
        self._runs: OrderedDict[GenSettings, GenerationRun] = OrderedDict()
        self._wants: dict[str | None, tuple[GenerationRun, ...]] = {}    # session -> the runs of its last request
        self._lock = threading.RLock()
        self.scheduler = Scheduler()
        self.decoder = Decoder()

    def run(self, settings: GenSettings, model: LoadedModel, owner: str | None = None) -> GenerationRun:
        """The run of ``settings``, wanted (also) by ``owner``: the stored one, or a new one, queued unless it is
        complete, queued or being computed already."""
        with self._lock:
            run = self._get(settings, model)
            earlier = tuple(r for r in self._wants.get(owner, ()) if r is not run)
            self._own(owner, (earlier + (run,))[-MAX_WANTED:])
            self._schedule(run)
            return run

    def want(self, owner: str | None, settings: list[GenSettings], model: LoadedModel) -> list[GenerationRun]:
        """The runs of ``settings``, now ``owner``'s whole request: the runs of its previous request that are not
        among them are no longer its own (cancelled unless another live session wants them)."""
        with self._lock:
            runs = [self._get(s, model) for s in settings]
            self._own(owner, tuple(runs))
            for run in runs:
                self._schedule(run)
            return runs

    def _get(self, settings: GenSettings, model: LoadedModel) -> GenerationRun:
        run = self._runs.get(settings)
        if run is None or run.error is not None or run.evicted:
            run = GenerationRun(settings, model)
            run.on_grow = self._evict
            self._runs[settings] = run
        self._runs.move_to_end(settings)
        return run

    def _own(self, owner: str | None, runs: tuple[GenerationRun, ...]) -> None:
        """Make ``runs`` the runs ``owner`` wants (no owner, a caller outside any session, supersedes nothing)."""
        if owner is None:
            for run in runs:
                run.owners.add(None)
            return
        for old in self._wants.get(owner, ()):
            if not any(old is run for run in runs):
                old.owners.discard(owner)
        for run in runs:
            run.owners.add(owner)
        self._wants[owner] = runs
        for gone in [o for o in self._wants if not session_alive(o)]:     # closed tabs
            for run in self._wants.pop(gone):
                run.owners.discard(gone)

    def _schedule(self, run: GenerationRun) -> None:
        if not run.done.is_set():
            self.scheduler.submit(run)
        self._evict()

    def _evict(self) -> None:
        """Forget the least recently used runs while the store is over its bounds, except those a live session is
        waiting for."""
        with self._lock:
            total = sum(r.nbytes for r in self._runs.values())
            for settings, run in list(self._runs.items())[:-1]:
                if len(self._runs) <= self.max_runs and total <= self.max_bytes:
                    break
                if run.wanted():
                    continue
                del self._runs[settings]
                run.evicted = True
                total -= run.nbytes

    def clear(self) -> None:
        """Forget every run (their batches stop at their next scale)."""
        with self._lock:
            for run in self._runs.values():
                run.evicted = True
            self._runs.clear()
            self._wants.clear()

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


def generations(settings: list[GenSettings], model: LoadedModel) -> list[GenerationRun]:
    """This session's request on the Generate page: the runs of ``settings`` (A, and B when comparing), which
    supersede the session's previous request (``TraceStore.want``)."""
    return trace_store().want(session_id(), settings, model)


def generation(settings: GenSettings) -> GenerationRun:
    """The (possibly still running) generation of ``settings``, wanted (also) by this session."""
    return trace_store().run(settings, load_model(settings.model_key), session_id())


def place(run: GenerationRun) -> Place | None:
    """Where ``run`` stands in the scheduler (None when it is neither queued nor being computed)."""
    return trace_store().scheduler.place(run)


def want_image(run: GenerationRun, si: int, model: LoadedModel) -> None:
    """Have the prefix image of scale ``si`` decoded in the background (a page shows it once decoded)."""
    trace_store().decoder.want(run, si, model)


def wait_scheduled(job, what: str) -> None:
    """Wait until the scheduler's ``job`` ended; GenerationStopped if it was dropped first (its session closed)."""
    while not job.done.wait(0.5):
        if not trace_store().scheduler.scheduled(job):
            raise GenerationStopped(f"{what} was cancelled before it ended")


class GenerationStopped(RuntimeError):
    """A generation was cancelled (superseded by a newer request, or its session closed) before it ended."""


def finished_generation(settings: GenSettings) -> GenerationRun:
    """The generation of ``settings``, waited for until every scale is computed; raises its error if it failed."""
    run = generation(settings)
    wait_scheduled(run, "the generation")
    if run.error is not None:
        raise run.error
    return run


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
