"""Attention for the position inspector: a generation run again capturing the attention of one picked position only
(``capture_attention={si: [i]}``), in the model's lane of the scheduler like every generation (``AttentionJob``), and
a step given the picked position's attention row (``step_with_attention_row``).
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import replace

import numpy as np
import streamlit as st
import torch

from app.loaders import LoadedModel, load_model
from app.scheduler import Scheduler
from app.traces import (GenerationStopped, GenSettings, finished_generation, session_alive, session_id,
                        trace_store, wait_scheduled)
from varlite.core.trace import ScaleStep


class AttentionJob:
    """The attention of the token ``i`` of scale ``si`` of a generation, captured by running the generation again up
    to that scale (same seed, so the same tokens) with the capture of that one query (every layer's (1, H, 1, Lk)
    row, not the scale's (1, H, l, Lk): 22 MB instead of 22 GB at d36-s's last scale): a job of the scheduler that runs
    alone in its model's lane, so that it waits for the batches ahead instead of slowing them down."""

    def __init__(self, settings: GenSettings, si: int, i: int, model: LoadedModel):
        self.settings, self.si, self.i = settings, si, i
        self.lane, self.batch_key, self.max_rows, self.gathers = settings.model_key, ("attention", id(self)), 1, False
        self.model = weakref.ref(model)
        self.owner = session_id()
        self.result: np.ndarray | None = None      # (layers, heads, end) float32
        self.error: BaseException | None = None
        self.done = threading.Event()

    def wanted(self) -> bool:
        return not self.done.is_set() and session_alive(self.owner)

    @staticmethod
    def compute(batch: list[AttentionJob], scheduler: Scheduler) -> None:
        job = batch[0]
        try:
            model = job.model()
            if model is None:
                raise RuntimeError("the model was unloaded before the attention could be captured: ask again")
            for live in model.var.generate_steps([job.settings.label], capture_attention={job.si: [job.i]},
                                                 **job.settings.args()):
                if live.scale == job.si:        # per layer (1, H, 1, Lk): the one captured query
                    job.result = np.stack([w[0, :, 0, :].float().cpu().numpy() for w in live.attention])
                    break
                if not scheduler.boundary(job.lane, batch).live:
                    break
        except BaseException as err:      # noqa: BLE001 -- handed to the page, which explains it
            job.error = err
        finally:
            job.done.set()


@st.cache_data(show_spinner="Capturing attention...", max_entries=256, ttl=3600)
def attention_at(settings: GenSettings, si: int, row: int, col: int) -> np.ndarray:
    """(layers, heads, end) float32: the attention of the token at (row, col) of scale ``si`` over every token it
    can see. Small models keep it in the trace; for larger ones the generation is run again up to scale ``si``
    capturing this query's row only (``AttentionJob``)."""
    step = finished_generation(settings).steps[si]
    i = row * step.pn + col
    if step.attention is not None:
        return np.stack([w[0, :, i, :].float().cpu().numpy() for w in step.attention])
    job = AttentionJob(settings, si, i, load_model(settings.model_key))
    trace_store().scheduler.submit(job)
    wait_scheduled(job, "capturing the attention")
    if job.error is not None:
        raise job.error
    if job.result is None:
        raise GenerationStopped("capturing the attention was cancelled before it ended")
    return job.result


def step_with_attention_row(step: ScaleStep, att_nLnHLk: np.ndarray, row: int, col: int) -> ScaleStep:
    """``step`` with one position's attention (layers, heads, Lk) as per-layer (1, heads, l, Lk) tensors in which
    only that position's row is meaningful (an expanded view, no l x Lk copy): what ``viz.attention_figure`` reads."""
    n_layers, n_heads, Lk = att_nLnHLk.shape
    l = step.pn * step.pn
    rows = [torch.from_numpy(np.ascontiguousarray(att_nLnHLk[i])).view(1, n_heads, 1, Lk).expand(1, n_heads, l, Lk)
            for i in range(n_layers)]
    return replace(step, attention=rows)
