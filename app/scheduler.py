"""The generation scheduler of the server: one queue per model, whose waiting requests run together as one batch.

A job is anything with these attributes (``traces.GenerationRun`` and ``attention_jobs.AttentionJob`` in the app, simple
objects in the tests): ``lane`` (the model's key), ``batch_key`` (jobs with equal keys may share one batch),
``max_rows`` (the most rows a batch of them may hold), ``gathers`` (whether its batch waits for others to join: a
slow model), ``wanted()`` (whether a live session still wants it) and ``compute(batch, scheduler)``, which computes a
batch of such jobs in the lane's worker thread and calls ``Scheduler.boundary`` after every scale.

The rules:

- Lanes. Every model has its own queue and at most one worker thread, which runs one batch at a time; the lanes of
  different models run side by side. So a built-in model is never queued behind d16.
- Batches. A free worker takes the request at the head of its queue and every waiting request with the same
  ``batch_key``, up to ``max_rows`` of them, and runs them as one batch: the library gives row b exactly the tokens
  of a solo run of its settings, so a student's image does not depend on who it was computed with.
- Gathering. A request that finds its lane idle starts after ``gather_s`` (slow models only), so that students
  who press Generate together share a batch; a request with the same key that arrives less than ``join_s`` after
  a batch started joins it: the batch restarts at its next scale boundary with the new rows (the old rows recompute
  their first scales, which are cheap: reading the weights dominates them, whatever the batch size, and their pages
  keep what they showed).
- Cancellation. A queued request nobody wants any more is dropped when its batch is formed. At each scale boundary
  a batch stops publishing to its unwanted rows; it computes them on, unseen (the library cannot take a row out of
  a running call), until no wanted row is left: then it stops before its next scale.
- Places. ``place(job)``: whether the job is computing (and with how many rows), about to start, or waiting, and
  then how many batches run before its own.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

GATHER_S = 0.4     # a slow model's batch starts this long after the request that found its lane idle
JOIN_S = 2.0       # a slow model's batch takes new rows (restarting) until this long after it started


@dataclass(frozen=True)
class Place:
    """Where a job stands: ``computing`` with ``rows`` rows in its batch, or ``starting`` (its batch starts within
    ``gather_s``), or waiting behind ``ahead`` batches (the running one included)."""
    computing: bool = False
    starting: bool = False
    rows: int = 0
    ahead: int = 0


@dataclass(frozen=True)
class Regroup:
    """What a batch does after a scale: publish to ``live`` rows; restart from scale 1 with ``restart`` rows when it
    is not None; stop when ``live`` is empty and there is no restart."""
    live: list
    restart: list | None = None


class _Lane:
    def __init__(self):
        self.queue: list = []                   # waiting jobs, oldest first
        self.arrived: dict[int, float] = {}     # id(job) -> time.monotonic() of its request
        self.running: list = []                 # the rows of the batch being computed
        self.started = 0.0                      # time.monotonic() when that batch started
        self.worker: threading.Thread | None = None


class Scheduler:
    """Lanes of jobs and their worker threads (see the module docstring for the rules)."""

    def __init__(self, gather_s: float = GATHER_S, join_s: float = JOIN_S):
        self.gather_s, self.join_s = gather_s, join_s
        self._lanes: dict[str, _Lane] = {}
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ requests
    def submit(self, job) -> None:
        """Queue ``job`` in its lane, unless it is queued or being computed already."""
        with self._cond:
            lane = self._lanes.setdefault(job.lane, _Lane())
            if any(j is job for j in lane.queue) or any(j is job for j in lane.running):
                return
            lane.queue.append(job)
            lane.arrived[id(job)] = time.monotonic()
            if lane.worker is None:
                lane.worker = threading.Thread(target=self._work, args=(job.lane,), daemon=True,
                                               name=f"varlite-generate-{job.lane}")
                lane.worker.start()
            self._cond.notify_all()

    def scheduled(self, job) -> bool:
        """Whether ``job`` is queued or being computed."""
        with self._cond:
            lane = self._lanes.get(job.lane)
            return lane is not None and any(j is job for j in lane.queue + lane.running)

    def place(self, job) -> Place | None:
        """Where ``job`` stands (None when it is neither queued nor being computed). Waiting jobs are counted in the
        batches they will form: the head of the queue with the requests that share its key, and so on."""
        with self._cond:
            lane = self._lanes.get(job.lane)
            if lane is None:
                return None
            if any(j is job for j in lane.running):
                return Place(computing=True, rows=len(lane.running))
            if not any(j is job for j in lane.queue):
                return None
            if any(j is job for j in self._joiners(lane, [j for j in lane.running if j.wanted()])):
                return Place(starting=True)
            ahead = 1 if lane.running else 0
            waiting = [j for j in lane.queue if j.wanted()]
            while waiting:
                batch = self._batch_of(waiting, waiting[0])
                if any(j is job for j in batch):
                    return Place(starting=ahead == 0, ahead=ahead)
                waiting = [j for j in waiting if not any(j is b for b in batch)]
                ahead += 1
            return Place(ahead=ahead)

    # ------------------------------------------------------------------ the batch's side
    def boundary(self, lane_key: str, rows: list) -> Regroup:
        """Called by ``compute_batch`` after every scale of the batch ``rows``: which rows are still wanted, and
        whether to restart with other rows (see ``Regroup``)."""
        with self._cond:
            lane = self._lanes[lane_key]
            live = [j for j in rows if j.wanted()]
            joiners = self._joiners(lane, live)
            if joiners:
                lane.queue = [j for j in lane.queue if not any(j is k for k in joiners)]
                for job in joiners:
                    lane.arrived.pop(id(job), None)
                lane.running = live + joiners
                return Regroup(live, restart=live + joiners)
            lane.running = live
            return Regroup(live)

    # ------------------------------------------------------------------ the worker
    def _work(self, lane_key: str) -> None:
        while True:
            with self._cond:
                lane = self._lanes[lane_key]
                batch = self._take_batch(lane)
                if not batch:
                    lane.worker = None
                    return
                lane.running, lane.started = batch, time.monotonic()
            try:
                batch[0].compute(batch, self)
            finally:
                with self._cond:
                    lane.running = []
                    self._cond.notify_all()

    def _take_batch(self, lane: _Lane) -> list:
        """The next batch of ``lane`` (called with the lock held): after the gathering wait, the head of the queue
        and the jobs that share its key; unwanted jobs are dropped on the way."""
        while True:
            for job in [j for j in lane.queue if not j.wanted()]:
                lane.queue.remove(job)
                del lane.arrived[id(job)]
            if not lane.queue:
                return []
            first = min(lane.arrived[id(j)] for j in lane.queue)
            wait = first + self.gather_s - time.monotonic() if lane.queue[0].gathers else 0.0
            if wait <= 0:
                break
            self._cond.wait(wait)
        batch = self._batch_of(lane.queue, lane.queue[0])
        lane.queue = [j for j in lane.queue if not any(j is b for b in batch)]
        for job in batch:
            lane.arrived.pop(id(job), None)
        return batch

    @staticmethod
    def _batch_of(queue: list, head) -> list:
        return [j for j in queue if j.batch_key == head.batch_key][:head.max_rows]

    def _joiners(self, lane: _Lane, live: list) -> list:
        """The queued jobs that join the running batch (rows ``live``) at its next scale boundary: those with its
        key that arrived less than ``join_s`` after it started (slow models only), oldest first, as many as it has
        room for."""
        if not live or not live[0].gathers:
            return []
        fits = [j for j in lane.queue if j.wanted() and j.batch_key == live[0].batch_key
                and lane.arrived[id(j)] - lane.started < self.join_s]
        return fits[:max(0, live[0].max_rows - len(live))]
