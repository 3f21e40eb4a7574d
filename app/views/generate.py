"""Generate: watch VAR draw an image coarse to fine, one scale per step.

The page is ``main``: the sampling controls (setting A, and B when comparing) and the generations they name
(app/generations.py; ``traces.generations``: this session's request to the server's scheduler, which computes
requests made together as one batch and shares every run between sessions), then two fragments: ``watcher``, a few
captions that look again every ``POLL_S`` while a scale is being computed or decoded and rerun the page when what it
shows must change, and ``step_viewer``, which draws the scale (on a timer while playing; its panels are drawn by
app/scale_panels.py). Every function is given the model and the generations it draws (``generations.Generations``);
the session's settings come from ``state.get()``.

The scale asked for is ``settings.scale`` (app/state.py); every control changes it in a callback, relative to the
server's value, so every click the server receives counts, and the slider is drawn from that number. The scale shown
is that one once it is computed; until then the page holds the scale it showed, with a note that it moves on when
the one asked for is there: a click on Next while the next scale is still being computed counts, and the page
advances when it is ready. The step viewer never waits for the scheduler: while a request waits in the queue the
watcher says where it stands, and looks again; the step viewer runs only on a click or a change, so its runs are few
and short. A small model's generation is waited for (up to ``generations.WHOLE_WAIT_S``) and its page drawn once,
complete. A large model (``traces.streams``: images above 64 px, e.g. d16 at 256 px) streams: a scale's heading,
token map and contribution are drawn as soon as it is computed, and its decoded image (seconds on a CPU), decoded in
the background for the scale asked for, once it is ready; new settings on such a model go back to scale 1, so that
the new image streams in as after a model switch.

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

import streamlit as st

from app import downloads, figures, generations, links, loaders, position_inspector, scale_panels, state, traces, ui
from app.generations import Generations
from app.loaders import LoadedModel
from app.traces import GenerationRun, GenSettings

PLAY_INTERVAL_S = 1.0
POLL_S = 0.5             # while scales are being computed or decoded, the watcher looks again this often
DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "contribution and f_hat so far",
           "probability": "probability and entropy maps", "topk": "top candidates (figure)",
           "mask": "attention mask (figure)"}


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
    scale_panels.draw_scale(gens, si, pick, looking=shown == k)
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
        gens = generations.request(model)
        s = state.get()
        s.scale = int(min(max(s.scale, 1), K))
        generations.back_to_scale_1_on_new_settings(gens)
        generations.wait_for_small_generations(gens)
    st.html(scale_panels.PAGE_CSS)
    timers = _timers(gens)
    s.drawn = _picture(gens)                   # what the step viewer draws below, in this run
    st.fragment(watcher, run_every=timers[0])(gens, timers)
    st.fragment(step_viewer, run_every=timers[1])(gens, timers)


main()
