"""The generations the Generate page shows: the sampling controls of setting A (and B when comparing), the requests
they make to the server's scheduler (``traces.generations``), and ``Generations``, the model and those runs, with the
rule for which scale the page shows while the scales are computed.

A small model's generation is waited for (up to ``WHOLE_WAIT_S``), so that its page is drawn once, complete. A large
model (``traces.streams``: images above 64 px) streams instead; new settings on such a model go back to scale 1, so
that the new image streams in as after a model switch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from app import state, traces, ui
from app.loaders import LoadedModel
from app.traces import GenerationRun, GenSettings

WAIT_SLICE_S = 0.2       # waiting for a small generation, the page redraws its progress bar this often
WHOLE_WAIT_S = 2.0       # a generation that ends within this is waited for (small models): no streaming, no timer


@dataclass(frozen=True)
class Generations:
    """The model and the generations the page shows: (name, settings, run) of A, and of B when comparing."""
    model: LoadedModel
    runs: tuple[tuple[str, GenSettings, GenerationRun], ...]

    @property
    def K(self) -> int:
        return len(self.model.patch_nums)

    @property
    def streaming(self) -> bool:
        return traces.streams(self.model)

    @property
    def done(self) -> bool:
        return all(run.done.is_set() for _, _, run in self.runs)

    @property
    def computed(self) -> int:
        """How many scales every run has computed."""
        return min(len(run.steps) for _, _, run in self.runs)

    def shown(self, k: int, held: int) -> int:
        """The scale the page shows when scale k is asked for and it showed scale ``held`` before: k once computed,
        else it holds its scale until k is there (the last computed one if it had none: 0 when none is)."""
        return k if self.computed >= k else min(held or k, self.computed)

    def decoding(self, k: int) -> bool:
        """Whether a streaming model's prefix image of scale k (asked for and computed) is still being decoded."""
        return (self.streaming and 1 <= k <= self.computed
                and any(k - 1 not in run.decoded() for _, _, run in self.runs))

    def caption(self, name: str, cap: str) -> str:
        """A panel's caption, named by its run when two are shown."""
        return cap if len(self.runs) == 1 else f"{name}: {cap}"


def request(model: LoadedModel) -> Generations:
    """The sampling controls of A (and B, when comparing) and the generations they name; invalid settings end the
    page with the library's explanation."""
    settings_a = ui.sampling_controls(model)
    compare = state.bound(st.toggle, "Compare with a second setting (side by side, same scale)", "gen_compare",
                          field="compare")
    settings_b = None
    if compare:
        st.markdown("**Setting B** (top-k, top-p and smoothing as above)")
        settings_b = ui.sampling_controls(model, b=True)
    named = [("A", settings_a)] + ([("B", settings_b)] if settings_b is not None else [])
    for _, settings in named:
        try:
            traces.validate(model, settings)
        except ValueError as err:
            st.error(f"These settings cannot be used: {err}")
            st.stop()
    runs = traces.generations([settings for _, settings in named], model)
    return Generations(model, tuple((name, settings, run) for (name, settings), run in zip(named, runs)))


def back_to_scale_1_on_new_settings(gens: Generations) -> None:
    """A large model streams its scales (``traces.streams``): when the settings change (seed, class, cfg, ...) and
    the new generation has not computed the scale shown yet, go back to scale 1, so that the new image streams in as
    after a model switch instead of showing nothing but a progress bar until every scale up to the one shown is
    computed. A small model keeps its scale (its generation ends within WHOLE_WAIT_S)."""
    s = state.get()
    shown = tuple(settings for _, settings, _ in gens.runs)
    if (s.generated and s.generated != shown and gens.streaming
            and not all(len(run.steps) >= s.scale for _, _, run in gens.runs)):
        s.scale = 1
    s.generated = shown


def wait_for_small_generations(gens: Generations) -> None:
    """Wait up to WHOLE_WAIT_S for the generations to end (interruptibly, redrawing a progress bar), so that a
    small model's page is drawn once, complete; a larger one (``traces.streams``) streams in the step viewer at
    once instead: waiting could only delay its first scale."""
    if gens.streaming:
        return
    deadline = time.monotonic() + WHOLE_WAIT_S
    total = gens.K * len(gens.runs)
    bar = None
    while time.monotonic() < deadline and not gens.done:
        bar = bar or st.progress(0.0)
        done = sum(len(run.steps) for _, _, run in gens.runs)
        bar.progress(done / total, text=f"generating: {done} of {total} scales...")
        for _, _, run in gens.runs:
            run.done.wait(WAIT_SLICE_S / len(gens.runs))
    if bar is not None:
        bar.empty()
