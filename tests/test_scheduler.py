"""The server's generation scheduler (app/scheduler.py) and the runs it computes (app/traces.py): batches, lanes,
the gathering window, young batches taking late requests, places in the queue, cancellation of what nobody wants,
and, with a real (tiny) model, that a batch gives every row exactly the tokens of its solo run."""
from __future__ import annotations

import threading
import time

import pytest
import torch

pytest.importorskip("streamlit")

from app import attention_jobs, traces  # noqa: E402
from app.scheduler import Place, Scheduler  # noqa: E402
from app.traces import GenSettings, TraceStore  # noqa: E402
from tests.test_app import tiny_model  # noqa: E402


# ------------------------------------------------------------------------------------------------ a fake job
class Job:
    """A job of ``scales`` scales taking ``scale_s`` seconds each; the batches it ran in go to ``log``."""

    def __init__(self, name: str, log: list, lane: str = "m", key: str = "k", max_rows: int = 8,
                 gathers: bool = False, scales: int = 3, scale_s: float = 0.0):
        self.name, self.log, self.lane, self.batch_key = name, log, lane, key
        self.max_rows, self.gathers, self.scales, self.scale_s = max_rows, gathers, scales, scale_s
        self.alive = True
        self.published = 0
        self.done = threading.Event()

    def wanted(self) -> bool:
        return self.alive and not self.done.is_set()

    @staticmethod
    def compute(batch: list, scheduler: Scheduler) -> None:
        """What traces.compute_batch does, without a model: publish each scale to the live rows, restart or stop
        as the scheduler says."""
        rows = batch
        while rows:
            rows[0].log.append([job.name for job in rows])
            restart = None
            for si in range(max(job.scales for job in rows)):
                time.sleep(rows[0].scale_s)
                regroup = scheduler.boundary(rows[0].lane, rows)
                for job in regroup.live:
                    if job.published == si:          # a restarted batch does not publish a scale twice
                        job.published += 1
                        if job.published == job.scales:
                            job.done.set()
                if regroup.restart is not None or not regroup.live:
                    restart = regroup.restart
                    break
            rows = [job for job in restart or [] if not job.done.is_set()]


def wait_idle(scheduler: Scheduler, *jobs, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(scheduler.scheduled(job) for job in jobs):
        assert time.monotonic() < deadline, "the scheduler did not finish"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------ batches and lanes
def test_requests_waiting_together_run_as_one_batch_per_key():
    log = []
    scheduler = Scheduler(gather_s=0.3)
    jobs = [Job(n, log, key=k, gathers=True) for n, k in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "x"))]
    for job in jobs:
        scheduler.submit(job)
    wait_idle(scheduler, *jobs)
    assert log == [["a", "b", "d"], ["c"]]
    assert all(job.done.is_set() for job in jobs)


def test_a_batch_holds_at_most_max_rows_and_the_rest_wait_their_turn():
    log = []
    scheduler = Scheduler(gather_s=0.3)
    jobs = [Job(n, log, max_rows=2, gathers=True) for n in "abcde"]
    for job in jobs:
        scheduler.submit(job)
    wait_idle(scheduler, *jobs)
    assert log == [["a", "b"], ["c", "d"], ["e"]]


def test_a_small_model_does_not_wait_for_company_and_lanes_run_side_by_side():
    log = []
    scheduler = Scheduler(gather_s=5.0)
    slow = Job("slow", log, lane="d16", gathers=True, scales=4, scale_s=0.3)
    scheduler.submit(slow)
    time.sleep(0.05)
    fast = Job("fast", log, lane="builtin")
    t0 = time.monotonic()
    scheduler.submit(fast)
    assert fast.done.wait(2.0) and time.monotonic() - t0 < 1.0        # not behind d16, no gathering wait
    assert not slow.done.is_set() and scheduler.place(slow) == Place(starting=True)    # still gathering (5 s)
    slow.alive = False
    wait_idle(scheduler, slow)
    assert log == [["fast"]]                                            # nobody wanted it any more: never started


def test_places_count_the_batches_ahead():
    log = []
    scheduler = Scheduler(gather_s=0.0, join_s=0.0)
    running = Job("r", log, scales=50, scale_s=0.02)
    scheduler.submit(running)
    while not log:
        time.sleep(0.005)
    a, b, c, d = (Job(n, log, key=k, max_rows=2) for n, k in (("a", "x"), ("b", "y"), ("c", "x"), ("d", "x")))
    for job in (a, b, c, d):
        scheduler.submit(job)
    assert scheduler.place(running) == Place(computing=True, rows=1)
    assert [scheduler.place(job).ahead for job in (a, b, c, d)] == [1, 2, 1, 3]    # batches [a c], [b], [d]
    b.alive = False                                                                # nobody wants b: d moves up
    assert [scheduler.place(job).ahead for job in (a, c, d)] == [1, 1, 2]
    running.alive = False
    wait_idle(scheduler, running, a, b, c, d)
    assert log == [["r"], ["a", "c"], ["d"]] and scheduler.place(a) is None


# ------------------------------------------------------------------------------------------------ joining and leaving
def test_a_young_batch_takes_a_late_request_and_restarts_without_publishing_twice():
    log = []
    scheduler = Scheduler(gather_s=0.0, join_s=1.0)
    first = Job("first", log, gathers=True, scales=10, scale_s=0.05)
    scheduler.submit(first)
    time.sleep(0.12)                                   # the batch has computed a scale or two
    late = Job("late", log, gathers=True, scales=10, scale_s=0.05)
    scheduler.submit(late)
    assert scheduler.place(late) == Place(starting=True)
    wait_idle(scheduler, first, late)
    assert log == [["first"], ["first", "late"]]
    assert first.published == late.published == 10


def test_an_old_batch_takes_no_new_rows():
    log = []
    scheduler = Scheduler(gather_s=0.0, join_s=0.1)
    first = Job("first", log, gathers=True, scales=10, scale_s=0.05)
    scheduler.submit(first)
    time.sleep(0.25)
    late = Job("late", log, gathers=True, scales=10, scale_s=0.05)
    scheduler.submit(late)
    assert scheduler.place(late) == Place(ahead=1)
    wait_idle(scheduler, first, late)
    assert log == [["first"], ["late"]]


def test_unwanted_rows_are_dropped_at_the_next_scale_and_an_unwanted_batch_stops():
    log = []
    scheduler = Scheduler(gather_s=0.0, join_s=0.0)
    a, b = Job("a", log, scales=20, scale_s=0.02), Job("b", log, scales=20, scale_s=0.02)
    scheduler.submit(a)
    scheduler.submit(b)
    while a.published < 2:
        time.sleep(0.005)
    a.alive = False                   # an old batch keeps computing the row, unseen
    published = a.published
    while b.published < published + 3:
        time.sleep(0.005)
    assert a.published <= published + 1
    b.alive = False                   # no row left: the batch stops
    wait_idle(scheduler, a, b)
    assert b.published < 20 and not b.done.is_set()


# ------------------------------------------------------------------------------------------------ real runs
@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def sessions(monkeypatch):
    """The session ids that count as connected (a closed tab is removed from the set)."""
    alive = {"s1", "s2", "s3", "s4", "s5"}
    monkeypatch.setattr(traces, "session_alive", lambda owner: owner is None or owner in alive)
    return alive


@pytest.fixture
def slow_steps(monkeypatch):
    """Make the tiny model's runs gather like a large model's, and every scale take 60 ms (a cancellation then
    lands between two scales); returns the list of batch sizes computed."""
    sizes = []
    compute = traces.compute_batch
    monkeypatch.setattr(traces, "streams", lambda model: True)
    monkeypatch.setattr(traces, "compute_batch", lambda batch, scheduler: (sizes.append(len(batch)),
                                                                            compute(batch, scheduler)))

    def slowed(var):
        generate_steps = var.generate_steps

        def steps(*args, **kwargs):
            for step in generate_steps(*args, **kwargs):
                time.sleep(0.06)
                yield step
        monkeypatch.setattr(var, "generate_steps", steps)
    return sizes, slowed


def assert_solo_tokens(model, run) -> None:
    """The run's every scale has exactly the tokens of a solo ``generate_steps`` call with its settings."""
    solo = list(model.var.generate_steps([run.settings.label], **run.settings.args()))
    assert run.complete and run.error is None
    for got, want in zip(run.steps, solo):
        assert torch.equal(got.tokens, want.tokens), run.settings
        torch.testing.assert_close(got.f_hat, want.f_hat, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
        assert got.cfg == pytest.approx(want.cfg)


def test_five_concurrent_requests_give_the_tokens_of_five_solo_runs(model, sessions, slow_steps):
    sizes, _ = slow_steps
    store = TraceStore()
    settings = [GenSettings(model.key, label=b % 3, seed=10 + b, cfg=(0.0, 1.5, 3.0, 4.0, 2.0)[b],
                            top_k=(0, 5, 20, 0, 1)[b], top_p=(0.0, 0.9, 0.0, 0.5, 0.0)[b]) for b in range(5)]
    runs = []
    for b, s in enumerate(settings):           # five students, each with their own class, seed, cfg and filters
        runs.append(store.want(f"s{b + 1}", [s], model)[0])
    for run in runs:
        assert run.done.wait(60)
    assert sizes == [5]
    for run in runs:
        assert_solo_tokens(model, run)


def test_a_late_request_joins_a_young_batch_with_the_same_tokens(model, sessions, slow_steps):
    sizes, slowed = slow_steps
    slowed(model.var)
    store = TraceStore()
    first = store.want("s1", [GenSettings(model.key, 1, seed=3, cfg=2.0)], model)[0]
    assert first.wait_for(1, 10)                   # the batch is computing
    late = store.want("s2", [GenSettings(model.key, 2, seed=4, cfg=0.5, top_k=7)], model)[0]
    assert late.done.wait(30) and first.done.wait(30)
    assert sizes == [1]                            # one batch, restarted with the late row
    for run in (first, late):
        assert_solo_tokens(model, run)


def test_a_sessions_new_request_supersedes_its_old_one(model, sessions, slow_steps):
    _, slowed = slow_steps
    slowed(model.var)
    store = TraceStore()
    old = store.want("s1", [GenSettings(model.key, 0, seed=0)], model)[0]
    assert old.wait_for(1, 10)
    new = store.want("s1", [GenSettings(model.key, 0, seed=1)], model)[0]
    assert new.done.wait(30)
    assert not old.done.is_set() and len(old.steps) < old.num_scales      # stopped at a scale boundary
    assert not store.scheduler.scheduled(old)
    again = store.want("s1", [GenSettings(model.key, 0, seed=0)], model)[0]    # asked for again: it goes on
    assert again is old and again.done.wait(30)
    assert_solo_tokens(model, again)


def test_a_run_another_session_wants_goes_on(model, sessions, slow_steps):
    _, slowed = slow_steps
    slowed(model.var)
    store = TraceStore()
    shared = GenSettings(model.key, 0, seed=5)
    run = store.want("s1", [shared], model)[0]
    assert store.want("s2", [shared], model)[0] is run
    store.want("s1", [GenSettings(model.key, 0, seed=6)], model)
    assert run.done.wait(30) and run.complete


def test_a_closed_sessions_generation_stops(model, sessions, slow_steps):
    _, slowed = slow_steps
    slowed(model.var)
    store = TraceStore()
    run = store.want("s3", [GenSettings(model.key, 0, seed=8)], model)[0]
    assert run.wait_for(1, 10)
    sessions.discard("s3")                         # the tab was closed
    deadline = time.monotonic() + 10
    while store.scheduler.scheduled(run):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(run.steps) < run.num_scales and not run.done.is_set()


def test_the_store_counts_runs_as_they_grow(model, sessions):
    one = TraceStore()
    probe = one.run(GenSettings(model.key, 0, seed=0), model)
    assert probe.done.wait(30)
    run_bytes = probe.nbytes
    assert run_bytes == one.nbytes > 0
    store = TraceStore(max_bytes=2 * run_bytes)
    peak = 0
    for seed in range(12):                         # started back to back, each counted as it grows
        run = store.want("s1", [GenSettings(model.key, 0, seed=seed)], model)[0]
        while not run.done.wait(0.001):
            peak = max(peak, store.nbytes)
        peak = max(peak, store.nbytes)
    assert peak <= 3 * run_bytes                   # the cap, and the run being computed
    assert store.nbytes <= 2 * run_bytes and len(store) == 2


def test_the_decoder_decodes_what_a_page_shows(model):
    store = TraceStore()
    run = store.run(GenSettings(model.key, 0, seed=2), model)
    assert run.done.wait(30)
    store.decoder.want(run, 3, model)
    deadline = time.monotonic() + 10
    while 3 not in run.decoded():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert set(run.decoded()) == {3}
    assert run.nbytes > sum(traces.step_nbytes(step) for step in run.steps)    # the image is counted too


def test_attention_is_captured_in_the_models_lane(model):
    store = TraceStore()
    settings = GenSettings(model.key, 1, seed=4, cfg=2.0)
    job = attention_jobs.AttentionJob(settings, si=2, i=5, model=model)
    store.scheduler.submit(job)
    assert job.done.wait(30) and job.error is None
    want = next(s for s in model.var.generate_steps([1], capture_attention=True, **settings.args()) if s.scale == 2)
    expected = torch.stack([w[0, :, 5, :] for w in want.attention]).numpy()
    torch.testing.assert_close(torch.from_numpy(job.result), torch.from_numpy(expected))
