"""Generate: watch VAR draw an image coarse to fine, one scale per step.

The page is ``main``: the sampling controls (setting A, and B when comparing), the generations they name
(``traces.generations``: this session's request to the server's scheduler, which computes requests made together as
one batch and shares every run between sessions), then two fragments: ``watcher``, a few captions that look again
every ``POLL_S`` while a scale is being computed or decoded and rerun the page when what it shows must change, and
``step_viewer``, which draws the scale (on a timer while playing). Every function is given the model and the
generations it draws (``Generations``); the session's settings come from ``state.get()``.

The scale asked for is ``settings.scale`` (app/state.py); every control changes it in a callback, relative to the
server's value, so every click the server receives counts, and the slider is drawn from that number. The scale shown
is that one once it is computed; until then the page holds the scale it showed, with a note that it moves on when
the one asked for is there: a click on Next while the next scale is still being computed counts, and the page
advances when it is ready. The step viewer never waits for the scheduler: while a request waits in the queue the
watcher says where it stands, and looks again; the step viewer runs only on a click or a change, so its runs are few
and short. A small model's generation is waited for (up to ``WHOLE_WAIT_S``) and its page drawn once, complete. A
large model (``traces.streams``: images above 64 px, e.g. d16 at 256 px) streams: a scale's heading, token map and
contribution are drawn as soon as it is computed, and its decoded image (seconds on a CPU), decoded in the
background for the scale asked for, once it is ready; new settings on such a model go back to scale 1, so that the
new image streams in as after a model switch.

Two clicks on the same button that reach the server during one run of the step viewer become one step. A
Streamlit button is a trigger (a boolean, not a counter): a click inside a fragment does not interrupt the running
fragment, and when a second rerun request arrives while the first is still queued, Streamlit merges the two and keeps
one "clicked" for that button (``_coalesce_widget_states`` and ``on_scriptrunner_yield`` in
streamlit/runtime/scriptrunner_utils/script_requests.py), so the script never sees the second click. That is why the
step viewer never blocks (no waiting for a scale, no decoding of a large image in its run): its runs are short, so
clicks 300 ms apart all count (tests/test_browser.py::test_every_click_counts, and on d16 while the scales are
still being computed, tests/test_browser_d16.py). Counting faster clicks would take a widget whose value the browser
itself increments (a custom component). A click on a token, probability or entropy map picks a position
(app/position_inspector.py). The page's address holds the settings, the scale and the position (app/links.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from app import downloads, figures, links, loaders, position_inspector, state, traces, ui
from app.loaders import LoadedModel
from app.traces import GenerationRun, GenSettings

PLAY_INTERVAL_S = 1.0
POLL_S = 0.5             # while scales are being computed or decoded, the watcher looks again this often
WAIT_SLICE_S = 0.2       # waiting for a small generation, the page redraws its progress bar this often
WHOLE_WAIT_S = 2.0       # a generation that ends within this is waited for (small models): no streaming, no timer
PANEL_PX = 160           # the clickable token map among the panels (fits their column on a 1000 px wide window)
# the overview strip sticks to the top of the scrolling main area; the panels keep a gap below the scale's heading as
# tall as a hover toolbar (44 px, drawn above a chart), which would cover it (tests/test_browser.py checks)
PAGE_CSS = """<style>
div:has(> .st-key-gen_overview) { position: sticky; top: 3.75rem; z-index: 99; }
.st-key-gen_overview { background: white; padding-bottom: 0.25rem; border-bottom: 1px solid rgba(128, 128, 128, 0.3); }
.st-key-gen_panels { padding-top: 2.5rem; }</style>"""
DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "contribution and f_hat so far",
           "probability": "probability and entropy maps", "topk": "top candidates (figure)",
           "mask": "attention mask (figure)"}


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


# ------------------------------------------------------------------------------------------------ the generations
def generations(model: LoadedModel) -> Generations:
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


def _back_to_scale_1_on_new_settings(gens: Generations) -> None:
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


def _wait_for_small_generations(gens: Generations) -> None:
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


# ------------------------------------------------------------------------------------------------ controls
def _go(k: int, K: int) -> None:
    s = state.get()
    s.playing = False
    s.scale = int(min(max(k, 1), K))


def _step(delta: int, K: int) -> None:
    """Next / Previous: one scale from the server's current scale (not from what the browser last showed)."""
    _go(state.get().scale + delta, K)


def _slide(key: str, drawn_at: int, K: int) -> None:
    """The slider moved. A browser that has not drawn the latest scale yet sends its old slider back with the
    value it was drawn at (Streamlit then reports a change); that is no move and is ignored."""
    if st.session_state[key] != drawn_at:
        _go(st.session_state[key], K)


def _play(K: int) -> None:
    s = state.get()
    s.playing, s.last_tick = True, time.monotonic()
    if s.scale >= K:
        s.scale = 1


def _pause() -> None:
    state.get().playing = False


def _controls(K: int) -> None:
    """Reset, Previous, Next, Play / Pause and the scale slider."""
    s = state.get()
    left, right = st.columns([1, 1], vertical_alignment="bottom")
    with left, st.container(horizontal=True, gap="small"):        # buttons as wide as their labels
        st.button("Reset", icon=":material/first_page:", on_click=_go, args=(1, K), key="gen_reset",
                  help="Back to the first scale")
        st.button("Previous", icon=":material/chevron_left:", on_click=_step, args=(-1, K), key="gen_prev",
                  disabled=s.scale <= 1)
        st.button("Next", icon=":material/chevron_right:", on_click=_step, args=(1, K), key="gen_next",
                  disabled=s.scale >= K, type="primary")
        if s.playing:
            st.button("Pause", icon=":material/pause:", key="gen_pause", on_click=_pause)
        else:
            st.button("Play", icon=":material/play_arrow:", key="gen_play", on_click=_play, args=(K,),
                      help=f"One scale every {PLAY_INTERVAL_S:.0f} s")
    with right:
        key = f"gen_scale_{s.scale}"          # a new widget per scale, drawn at the server's scale
        st.slider("Scale", 1, K, s.scale, key=key, on_change=_slide, args=(key, s.scale, K),
                  help="Scrub through the scales")


# ------------------------------------------------------------------------------------------------ polling
def _timers(gens: Generations) -> tuple[float | None, float | None]:
    """(watcher, step viewer): the watcher looks every POLL_S while a scale is being computed or the shown one
    decoded; the step viewer reruns every PLAY_INTERVAL_S while playing. Both are set when the page draws them."""
    s = state.get()
    watch = POLL_S if not gens.done or gens.decoding(s.scale) else None
    return watch, PLAY_INTERVAL_S if s.playing else None


def _picture(gens: Generations) -> tuple:
    """What the step viewer's picture depends on besides the session's own controls: the scale shown (the one asked
    for once computed; until then the page holds the one it showed, so that it redraws once, not at every scale
    computed meanwhile: its runs stay few while the student clicks on), whether that image is still being decoded,
    whether a generation failed."""
    s = state.get()
    held = s.drawn[0] if s.drawn else 0
    return gens.shown(s.scale, held), gens.decoding(s.scale), any(run.error is not None for _, _, run in gens.runs)


def _tick(gens: Generations) -> None:
    """While playing: one scale further every PLAY_INTERVAL_S, once that scale is computed; stop at the last."""
    s = state.get()
    now = time.monotonic()
    if now - s.last_tick < 0.8 * PLAY_INTERVAL_S:
        return
    if s.scale < gens.K and all(len(run.steps) > s.scale for _, _, run in gens.runs):
        s.scale += 1
        s.last_tick = now
    if s.scale >= gens.K or any(run.error is not None for _, _, run in gens.runs):
        s.playing = False


def _follow_the_timer(gens: Generations, timers: tuple) -> None:
    """Play one step if it is time, and rerun the whole page when a fragment's timer must change (Play pressed,
    playing, computing or decoding ended, a decode asked for): the timers are set when the page draws them."""
    if state.get().playing:
        _tick(gens)
    if _timers(gens) != timers:
        st.rerun(scope="app")


def watcher(gens: Generations, timers: tuple) -> None:
    """Where each unfinished generation stands; drawn as a fragment that looks again every POLL_S while something
    is pending, and reruns the page when the step viewer's picture changed (``_picture``: the scale asked for was
    computed, its image decoded, a generation failed) or the timers must change. Its runs are a few captions, so
    looking often costs little, and the step viewer's runs stay rare and short: clicks on Next all count. While the
    student looks at a scale whose image is being decoded, it renews the decoder's wish (``traces.want_image``)."""
    k = state.get().scale
    if _picture(gens) != state.get().drawn or _timers(gens) != timers:
        st.rerun(scope="app")
    if gens.decoding(k):                       # the student is looking at this scale: keep its decode wished for
        for _, _, run in gens.runs:
            traces.want_image(run, k - 1, gens.model)
    for name, _, run in gens.runs:
        where = _where(gens, name, run)
        if where:
            st.caption(where)


def _failed(gens: Generations) -> bool:
    """Show the error of a failed generation; whether there was one."""
    for _, _, run in gens.runs:
        if run.error is not None:
            st.error(f"Generation failed: {loaders.friendly_error(run.error)}")
            return True
    return False


def _where(gens: Generations, name: str, run: GenerationRun) -> str | None:
    """Where an unfinished run stands, in words (None when it is complete)."""
    if run.done.is_set():
        return None
    who = name + ": " if len(gens.runs) > 1 else ""
    place = traces.place(run)
    if place is None or place.computing or run.steps:
        together = f", in one batch with {place.rows - 1} other image{'s' if place.rows > 2 else ''}" \
            if place is not None and place.rows > 1 else ""
        return (f":material/hourglass_top: {who}computed {len(run.steps)} of {gens.K} scales "
                f"({run.ready_s[-1] if run.ready_s else 0:.1f} s){together}; step through them while the rest are "
                f"computed.")
    if place.starting:
        return (f":material/hourglass_top: {who}starting in a moment (requests made at the same time are computed "
                f"together, as one batch).")
    return (f":material/hourglass_top: {who}waiting for {place.ahead} generation{'s' if place.ahead > 1 else ''} of "
            f"this model ahead of yours (other students' requests, computed one batch at a time).")


def _pending_note(k: int, shown: int) -> None:
    """A note while the scale asked for is not computed yet (the page moves on by itself when it is)."""
    if shown and shown < k:
        st.caption(f":material/pending: Scale {k} is shown as soon as it is computed (now showing scale {shown}).")


# ------------------------------------------------------------------------------------------------ the step viewer
@dataclass
class StepLayout:
    """Where the step viewer draws a scale, made before anything of it is drawn."""
    strips: list          # per run: the slot of its overview strip (sticky at the top of the page)
    panels: list          # per run: the columns of its token map and its contribution
    decoded: list         # per run: the slot of its decoded image
    mask: object          # the column of the attention mask


def _lay_out(gens: Generations, si: int) -> StepLayout:
    """The overview strips, the scale's heading, and a column per run (token map, contribution, decoded image)
    beside the attention mask's column."""
    step_a = gens.runs[0][2].steps[si]
    with st.container(key="gen_overview"):          # sticky (PAGE_CSS): stays in view while scrolling
        strips = [st.empty() for _ in gens.runs]
    pn, tokens = step_a.pn, step_a.pn * step_a.pn
    st.subheader(f"Scale {si + 1} of {gens.K}: {pn}x{pn} = {tokens} token{'s' if tokens > 1 else ''}, "
                 f"predicted in one step (guidance here t = {step_a.cfg:.2f})")
    cols = st.container(key="gen_panels").columns([3, 1] if len(gens.runs) == 1 else [3, 3, 1])
    panels, decoded = [], []
    for col in cols[:-1]:
        pcols = col.columns(3)
        panels.append(pcols[:2])
        decoded.append(pcols[2].empty())
    return StepLayout(strips, panels, decoded, cols[-1])


def _draw_strips(gens: Generations, strips: list, si: int) -> None:
    """The overview strip of every run (a large model's strip shows the scales decoded so far)."""
    sides = " · ".join(f"{p}x{p}" for p in gens.model.patch_nums)
    for slot, (name, settings, _) in zip(strips, gens.runs):
        slot.image(figures.overview_strip(settings, si), output_format="PNG",
                   caption=gens.caption(name, f"decoded image after every scale ({sides}; scale {si + 1} framed, "
                                              f"later scales faded)"))


def _draw_decoded(gens: Generations, slot, name: str, settings: GenSettings, si: int, pick: tuple[int, int]) -> None:
    cap, img = figures.decoded_panel(settings, si, pick)
    slot.image(img, caption=gens.caption(name, cap), width="stretch", output_format="PNG")


def _draw_panels(gens: Generations, layout: StepLayout, si: int, pick: tuple[int, int], looking: bool) -> None:
    """Scale si's token map and contribution of every run (with one run, the token map is clickable; with two, it
    is in the inspector: the panels are too narrow), its decoded image, and the attention mask with the picked
    token's row. A streaming model's image is decoded in the background (``traces.want_image``) when the student is
    ``looking`` at this scale (it is the one asked for, not one the page passes through); a note keeps its place
    until then."""
    row, col = pick
    step_a = gens.runs[0][2].steps[si]
    for (name, settings, run), pcols, slot in zip(gens.runs, layout.panels, layout.decoded):
        panels = figures.latent_panels(settings, si, len(run.steps), pick)
        for j, (pcol, (cap, img)) in enumerate(zip(pcols, panels)):
            with pcol:
                if len(gens.runs) == 1 and j == 0:
                    position_inspector.step_map(gens.model, "tokens", step_a, si, row, col, PANEL_PX)
                    st.caption(f"{cap}: click a token to inspect it")
                else:
                    st.image(img, caption=gens.caption(name, cap), width="stretch", output_format="PNG")
        if gens.streaming and si not in run.decoded():
            slot.caption(":material/hourglass_top: decoding the image so far...")
            if looking:
                traces.want_image(run, si, gens.model)
        else:
            _draw_decoded(gens, slot, name, settings, si, pick)
    layout.mask.image(figures.block_mask(gens.model.patch_nums, si, row * step_a.pn + col), width="stretch",
                      output_format="PNG", caption=figures.block_mask_caption(gens.model.patch_nums, si))


def step_viewer(gens: Generations, timers: tuple) -> None:
    """Scale ``Settings.scale`` of every run: controls, overview strips, panels, the inspector, a detailed figure
    and the downloads; drawn as a fragment that reruns itself on a click, and on a timer while playing."""
    t0 = time.perf_counter()
    _follow_the_timer(gens, timers)
    _controls(gens.K)
    picture = state.get().drawn = _picture(gens)     # what the watcher compares with
    if _failed(gens):
        return
    k = state.get().scale                      # the scale asked for
    shown = picture[0]                         # everything below is drawn from this one number
    _pending_note(k, shown)
    if shown == 0:                             # nothing computed yet: the watcher says where the request stands
        return
    si = shown - 1
    if not gens.streaming:                     # small: decode this prefix (once, milliseconds) before drawing
        for _, _, run in gens.runs:
            run.image(si, gens.model)
    pick = position_inspector.take_clicks(si, gens.runs[0][2].steps[si].pn)
    links.write(gens.model)                    # the address holds this view (app/links.py)
    layout = _lay_out(gens, si)
    _draw_strips(gens, layout.strips, si)
    _draw_panels(gens, layout, si, pick, looking=shown == k)
    _, settings_a, run_a = gens.runs[0]
    position_inspector.inspector(gens.model, run_a.steps[si], settings_a, si, *pick, with_tokens=len(gens.runs) > 1)
    details(gens.model, settings_a, si, *pick)
    downloads.generation_downloads(gens.model, settings_a)
    st.caption(f"step rendered in {(time.perf_counter() - t0) * 1000:.0f} ms on the server")


# ------------------------------------------------------------------------------------------------ below the panels
def details(model: LoadedModel, settings: GenSettings, si: int, row: int, col: int) -> None:
    """The lessons' matplotlib figures for this scale, drawn on request (each is cached once drawn)."""
    kind = state.bound(st.segmented_control, "Detailed figure (as in the lessons)", "gen_detail", default="none",
                       options=list(DETAILS), format_func=DETAILS.get)
    if kind in (None, "none"):
        return
    try:
        if kind == "mask":
            png = figures.mask_figure(model.patch_nums, si)
        else:
            png = figures.generation_figure(kind, settings, si, row, col)
    except Exception as err:      # noqa: BLE001
        st.error(f"Could not draw this figure: {loaders.friendly_error(err)}")
        return
    st.image(png, width="stretch" if kind in ("tokens", "latents") else 720)


# ------------------------------------------------------------------------------------------------ the page
def main() -> None:
    # Everything above the two fragments lives in one container, so that the fragments keep the same place in the
    # page from run to run whatever notes this run writes (a note that comes and goes would move them, and a
    # fragment timer armed in the previous run then writes to a place the browser no longer has: Streamlit's
    # "Bad delta path index" error, seen when a new seed was entered on d16 while the scales were computed).
    with st.container(key="gen_top"):
        st.title("Generate: next-scale prediction, step by step")
        ui.explain(
            "VAR does not predict an image token by token. It predicts a whole **token map** per step: first 1x1, "
            "then 2x2, 3x3, ... up to the final grid. Every token of a scale is sampled at once, conditioned on the "
            "class and on all coarser scales. Each scale's tokens are looked up in the codebook, upsampled, passed "
            "through a small conv φ and added to `f_hat`, the running latent; decoding `f_hat` after k scales gives "
            "the picture so far.\n\n"
            "Panels for the current scale: **tokens** (one colour per codebook entry), **contribution** (how much this "
            "scale adds at each position of the latent), **decoded so far**, and the **attention mask** (rows = "
            "queries, columns = keys; orange = this scale's rows: they see every coarser scale and their own).\n\n"
            "The views are linked: click a token (or a cell of the probability or entropy map) and that position is "
            "framed on every panel, its row of the attention mask turns blue, and the inspector shows its candidates "
            "and, on request, its attention. The same image area stays picked when you step to the next scale.",
            "The first few scales fix the layout and colours, the last ones only add detail: the contribution panel "
            "gets fainter as the picture stops changing. Raise the guidance (cfg) and watch the class become clearer; "
            "click a token (or the probability or entropy map) to see how sure the model was there.",
            ("next_scale", "inside_the_transformer", "sampling"))
        model = ui.current_model()
        K = len(model.patch_nums)
        st.caption(f"Model **{model.name}**: {K} scales {' → '.join(f'{p}x{p}' for p in model.patch_nums)}, "
                   f"L = {model.var.L} tokens, codebook of {model.vocab_size} entries, "
                   f"{model.image_size}x{model.image_size} px images.")
        gens = generations(model)
        s = state.get()
        s.scale = int(min(max(s.scale, 1), K))
        _back_to_scale_1_on_new_settings(gens)
        _wait_for_small_generations(gens)
    st.html(PAGE_CSS)
    timers = _timers(gens)
    s.drawn = _picture(gens)                   # what the step viewer draws below, in this run
    st.fragment(watcher, run_every=timers[0])(gens, timers)
    st.fragment(step_viewer, run_every=timers[1])(gens, timers)


main()
