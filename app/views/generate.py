"""Generate: watch VAR draw an image coarse to fine, one scale per step.

The scale shown is ``settings.scale`` (app/state.py); every control changes it in a callback, relative to the
server's value, so every click the server receives counts and the slider, the heading and the panels are drawn from
one number in one run. The generation streams: scales appear as the worker thread computes them (app/traces.py).
For a large model (``traces.streams``: images above 64 px, e.g. d16 at 256 px) a scale's heading, token map and
contribution are drawn as soon as it is computed and its decoded image (seconds on a CPU) last, in the place kept for
it; new settings on such a model go back to scale 1, so that the new image streams in as after a model switch.

The limit (issue 14 item 1): two clicks on the same button less than ~100 ms apart can still become one step.
A Streamlit button is a trigger (a boolean, not a counter); when a second rerun request arrives while the first is
still queued, Streamlit merges the two requests and keeps one "clicked" for that button
(``_coalesce_widget_states`` in streamlit/runtime/scriptrunner_utils/script_requests.py), so the script never sees
the second click. No server-side code can recover it. Counting clicks in the browser would need a widget whose
value the browser itself increments (a custom component, i.e. our own JavaScript, or a number input's +/- in place
of the Next button, which trades this for steps computed from a possibly stale displayed scale); neither was
judged worth it for clicks faster than the eye can follow a step. Clicks 300 ms apart all count
(tests/test_browser.py::test_every_click_counts).

A click on the token, probability or entropy map picks a position (see "picking a position" below).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from app import downloads, figures, loaders, state, traces, ui
from app.traces import GenerationRun, GenSettings

PLAY_INTERVAL_S = 1.0
POLL_S = 0.5             # while scales are still being computed, the step viewer looks again this often
WAIT_SLICE_S = 0.2       # waiting for a scale, the page redraws its progress bar (where a click can stop it) this often
WHOLE_WAIT_S = 2.0       # a generation that ends within this is waited for (small models): no streaming, no timer

st.title("Generate: next-scale prediction, step by step")
ui.explain(
    "VAR does not predict an image token by token. It predicts a whole **token map** per step: first 1x1, then "
    "2x2, 3x3, ... up to the final grid. Every token of a scale is sampled at once, conditioned on the class and on "
    "all coarser scales. Each scale's tokens are looked up in the codebook, upsampled and added to `f_hat`, the "
    "running latent; decoding `f_hat` after k scales gives the picture so far.\n\n"
    "Panels for the current scale: **tokens** (one colour per codebook entry), **contribution** (how much this "
    "scale adds at each position of the latent), **decoded so far**, and the **attention mask** (rows = queries, "
    "columns = keys; orange = this scale's rows: they see every coarser scale and their own).\n\n"
    "The views are linked: click a token (or a cell of the probability or entropy map) and that position is "
    "framed on every panel, its row of the attention mask turns blue, and the inspector shows its candidates and, "
    "on request, its attention. The same image area stays picked when you step to the next scale.",
    "The first few scales fix the layout and colours, the last ones only add detail: the contribution panel gets "
    "fainter as the picture stops changing. Raise the guidance (cfg) and watch the class become clearer; "
    "click a token (or the probability or entropy map) to see how sure the model was there.",
    ("next_scale", "inside_the_transformer", "sampling"))

model = ui.current_model()
s = state.get()
K = len(model.patch_nums)
STREAMING = traces.streams(model)
colors = figures.codebook_colors(model.key)
st.caption(f"Model **{model.name}**: {K} scales {' → '.join(f'{p}x{p}' for p in model.patch_nums)}, "
           f"L = {model.var.L} tokens, codebook of {model.vocab_size} entries, "
           f"{model.image_size}x{model.image_size} px images.")

settings_a = ui.sampling_controls(model)
state.bound(st.toggle, "Compare with a second setting (side by side, same scale)", "gen_compare", field="compare")
settings_b = None
if s.compare:
    st.markdown("**Setting B** (top-k, top-p and smoothing as above)")
    settings_b = ui.sampling_controls(model, b=True)
for settings in filter(None, (settings_a, settings_b)):
    try:
        traces.validate(model, settings)
    except ValueError as err:
        st.error(f"These settings cannot be used: {err}")
        st.stop()
runs = [("A", settings_a, traces.generation(settings_a))]
if settings_b is not None:
    runs.append(("B", settings_b, traces.generation(settings_b)))
s.scale = int(min(max(s.scale, 1), K))


def _back_to_scale_1_on_new_settings() -> None:
    """A large model streams its scales (``traces.streams``): when the settings change (seed,
    class, cfg, ...) and the new generation has not computed the scale shown yet, go back to scale 1, so that the
    new image streams in as after a model switch instead of showing nothing but a progress bar until every scale
    up to the one shown is computed. A small model keeps its scale (its generation ends within WHOLE_WAIT_S)."""
    shown = tuple(settings for _, settings, _ in runs)
    if (s.generated and s.generated != shown and STREAMING
            and not all(len(run.steps) >= s.scale for _, _, run in runs)):
        s.scale = 1
    s.generated = shown


_back_to_scale_1_on_new_settings()


def _wait_for_small_generations() -> None:
    """Wait up to WHOLE_WAIT_S for the generations to end (interruptibly, redrawing a progress bar), so that a
    small model's page is drawn once, complete; a larger one (``traces.streams``) streams in
    the step viewer at once instead: waiting could only delay its first scale."""
    if STREAMING:
        return
    deadline = time.monotonic() + WHOLE_WAIT_S
    bar = None
    while time.monotonic() < deadline and not all(run.done.is_set() for _, _, run in runs):
        bar = bar or st.progress(0.0)
        done = sum(len(run.steps) for _, _, run in runs)
        bar.progress(done / (K * len(runs)), text=f"generating: {done} of {K * len(runs)} scales...")
        for _, _, run in runs:
            run.done.wait(WAIT_SLICE_S / len(runs))
    if bar is not None:
        bar.empty()


_wait_for_small_generations()


# ------------------------------------------------------------------------------------------------ controls
def _go(k: int) -> None:
    s.playing = False
    s.scale = int(min(max(k, 1), K))


def _step(delta: int) -> None:
    """Next / Previous: one scale from the server's current scale (not from what the browser last showed)."""
    _go(s.scale + delta)


def _slide(key: str, drawn_at: int) -> None:
    """The slider moved. A browser that has not drawn the latest scale yet sends its old slider back with the
    value it was drawn at (Streamlit then reports a change); that is no move and is ignored."""
    if st.session_state[key] != drawn_at:
        _go(st.session_state[key])


def _play() -> None:
    s.playing, s.last_tick = True, time.monotonic()
    if s.scale >= K:
        s.scale = 1


def _pause() -> None:
    s.playing = False


def _tick(all_runs: list[GenerationRun]) -> None:
    """While playing: one scale further every PLAY_INTERVAL_S, once that scale is computed; stop at the last."""
    now = time.monotonic()
    if now - s.last_tick < 0.8 * PLAY_INTERVAL_S:
        return
    if s.scale < K and all(len(r.steps) > s.scale for r in all_runs):
        s.scale += 1
        s.last_tick = now
    if s.scale >= K or any(r.error is not None for r in all_runs):
        s.playing = False


def _timer_s() -> float | None:
    """How often the step viewer reruns by itself: while scales are being computed, while playing, else never."""
    if not all(run.done.is_set() for _, _, run in runs):
        return POLL_S
    return PLAY_INTERVAL_S if s.playing else None


def _controls() -> None:
    left, right = st.columns([1, 1], vertical_alignment="bottom")
    with left, st.container(horizontal=True, gap="small"):        # buttons as wide as their labels
        st.button("Reset", icon=":material/first_page:", on_click=_go, args=(1,), key="gen_reset",
                  help="Back to the first scale")
        st.button("Previous", icon=":material/chevron_left:", on_click=_step, args=(-1,), key="gen_prev",
                  disabled=s.scale <= 1)
        st.button("Next", icon=":material/chevron_right:", on_click=_step, args=(1,), key="gen_next",
                  disabled=s.scale >= K, type="primary")
        if s.playing:
            st.button("Pause", icon=":material/pause:", key="gen_pause", on_click=_pause)
        else:
            st.button("Play", icon=":material/play_arrow:", key="gen_play", on_click=_play,
                      help=f"One scale every {PLAY_INTERVAL_S:.0f} s")
    with right:
        key = f"gen_scale_{s.scale}"          # a new widget per scale, drawn at the server's scale
        st.slider("Scale", 1, K, s.scale, key=key, on_change=_slide, args=(key, s.scale),
                  help="Scrub through the scales")


def _wait_for_scale(k: int) -> bool:
    """Wait (interruptibly: the progress bar is redrawn every WAIT_SLICE_S) until scale k of every run is computed."""
    bar = None
    for name, _, run in runs:
        while not run.wait_for(k, WAIT_SLICE_S):
            if run.done.is_set():
                break
            bar = bar or st.progress(0.0)
            bar.progress(len(run.steps) / K, text=f"{name + ': ' if len(runs) > 1 else ''}computing scale "
                                                  f"{len(run.steps) + 1} of {K}...")
    if bar is not None:
        bar.empty()
    for name, _, run in runs:
        if run.error is not None:
            st.error(f"Generation failed: {loaders.friendly_error(run.error)}")
            return False
    return True


def _status() -> None:
    """How far the generation is: shown while scales are still being computed."""
    for name, _, run in runs:
        if not run.done.is_set():
            st.caption(f":material/hourglass_top: {name + ': ' if len(runs) > 1 else ''}computed "
                       f"{len(run.steps)} of {K} scales ({run.ready_s[-1] if run.ready_s else 0:.1f} s); "
                       f"step through them while the rest are computed.")


# ------------------------------------------------------------------------------------------------ the step viewer
@st.fragment(run_every=_timer_s())
def step_viewer(timer_s: float | None) -> None:
    t0 = time.perf_counter()
    if s.playing:
        _tick([run for _, _, run in runs])
    if _timer_s() != timer_s:          # Play pressed, or playing / computing ended: redraw with the right timer
        st.rerun(scope="app")
    _controls()
    k = s.scale                                # everything below is drawn from this one number
    if not _wait_for_scale(k):
        return
    si = k - 1
    _status()
    if not STREAMING:                          # small: decode this prefix (once, milliseconds) before drawing
        for _, _, run in runs:
            run.image(si, model)
    with st.container(key="gen_overview"):          # sticky (see the CSS below): stays in view while scrolling
        strips = [st.empty() for _ in runs]
    _draw_strips(strips, si)
    step_a = runs[0][2].steps[si]
    side = step_a.pn
    _take_clicks(si, side)
    row, col = s.position(side)                # the picked point's token on this scale (same area on every scale)
    tokens = side * side
    st.subheader(f"Scale {k} of {K}: {side}x{side} = {tokens} token{'s' if tokens > 1 else ''}, "
                 f"predicted in one step (guidance here t = {step_a.cfg:.2f})")
    cols = st.columns([3, 1] if len(runs) == 1 else [3, 3, 1])
    decoded_slots = []                         # (slot, name, settings): the decoded images, drawn last if streaming
    for (name, settings, run), col_ in zip(runs, cols):
        with col_:
            panels = figures.latent_panels(settings, si, len(run.steps), (row, col))
            pcols = st.columns(3)
            for j, (pcol, (cap, img)) in enumerate(zip(pcols, panels)):
                with pcol:
                    if len(runs) == 1 and j == 0:      # the token map is clickable (with B: in the inspector,
                        _clickable("tokens", step_a, si, row, col, PANEL_PX)     # the panels are too narrow)
                        st.caption(f"{cap}: click a token to inspect it")
                    else:
                        st.image(img, caption=_panel_caption(name, cap), width="stretch", output_format="PNG")
            with pcols[2]:
                slot = st.empty()
                if STREAMING and si not in run.decoded():
                    slot.caption(":material/hourglass_top: decoding the image so far...")
                else:
                    _draw_decoded(slot, name, settings, si, (row, col))
                decoded_slots.append((slot, name, settings))
    with cols[-1]:
        st.image(figures.block_mask(model.patch_nums, si, row * side + col), width="stretch", output_format="PNG",
                 caption=f"attention mask, L={step_a.total_tokens}: scale {k}'s rows in orange, the picked token's "
                         f"row in blue")
    inspector(runs[0][2], si, settings_a, row, col, with_tokens=len(runs) > 1)
    details(settings_a, si, row, col)
    downloads.generation_downloads(model, settings_a)
    if STREAMING:                              # large: everything else is on screen; now decode (seconds)
        for slot, name, settings in decoded_slots:
            _draw_decoded(slot, name, settings, si, (row, col))
        _draw_strips(strips, si)
    st.caption(f"step rendered in {(time.perf_counter() - t0) * 1000:.0f} ms on the server")


def _panel_caption(name: str, cap: str) -> str:
    return cap if len(runs) == 1 else f"{name}: {cap}"


def _draw_decoded(slot, name: str, settings: GenSettings, si: int, pick: tuple[int, int]) -> None:
    cap, img = figures.decoded_panel(settings, si, pick)
    slot.image(img, caption=_panel_caption(name, cap), width="stretch", output_format="PNG")


def _draw_strips(strips: list, si: int) -> None:
    """The overview strip of every run (a large model's strip shows the scales decoded so far)."""
    sides = " · ".join(f"{p}x{p}" for p in model.patch_nums)
    for slot, (name, settings, run) in zip(strips, runs):
        slot.image(figures.overview_strip(settings, si), output_format="PNG",
                   caption=_panel_caption(name, f"decoded image after every scale ({sides}; scale {si + 1} framed, "
                                                f"later scales faded)"))


# ------------------------------------------------------------------------------------------------ picking a position
# A click on a map reruns the step viewer with the map's selection in st.session_state under the map's key. The
# key names the scale and the position picked when the map was drawn, so every pick draws fresh maps (with no
# selection left in them) and a selection found under the current keys is always a new click; it is read before
# anything is drawn, so every panel of this run shows the new position.
CLICKABLE = ("tokens", "probability", "entropy")
PANEL_PX = 160          # the clickable token map among the panels (fits their column on a 1000 px wide window)
INSPECTOR_PX = 150


def _pick_key(name: str, si: int, row: int, col: int) -> str:
    return f"gen_pick_{name}_{si}_{row}_{col}"


def _take_clicks(si: int, side: int) -> None:
    """Apply a click on one of this scale's maps (drawn with the current position) to the picked point."""
    row, col = s.position(side)
    for name in CLICKABLE:
        cells = figures.picked_cells(st.session_state.get(_pick_key(name, si, row, col)), side)
        if cells - {(row, col)}:
            s.pick(*sorted(cells - {(row, col)})[0], side)
            return


def _clickable(name: str, step, si: int, row: int, col: int, px: int = figures.DISPLAY_PX) -> None:
    """A clickable map of step A's scale si ("tokens", "probability" or "entropy"), the picked token framed."""
    probs, entropy = step.token_prob[0].numpy(), step.entropy[0].numpy()
    if name == "tokens":
        chart = figures.token_chart(step.tokens[0].numpy(), colors, {(row, col)}, probs, entropy, px=px)
    else:
        chart = figures.step_chart(name, step.tokens[0].numpy(), probs, entropy, model.vocab_size, {(row, col)}, px)
    st.vega_lite_chart(chart.data, chart.spec, key=_pick_key(name, si, row, col), on_select="rerun",
                       selection_mode=figures.PICK, width="content", theme=None)


def inspector(run: GenerationRun, si: int, settings: GenSettings, row: int, col: int, with_tokens: bool) -> None:
    """The picked position of the current scale: how sure the model was there, its top candidates and, on
    request, its attention; ``with_tokens`` adds the clickable token map (when the panels above cannot hold it)."""
    step = run.steps[si]
    with st.expander(f"Inspect the picked position ({row}, {col}) of this scale (A)", expanded=True):
        c = st.columns([1, 1, 1, 2] if with_tokens else [1, 1, 2])
        if with_tokens:
            with c.pop(0):
                _clickable("tokens", step, si, row, col, INSPECTOR_PX)
                st.caption("tokens (codebook colours)")
        with c[0]:
            _clickable("probability", step, si, row, col, INSPECTOR_PX)
            st.caption("probability of the chosen token (dark = unsure)")
        with c[1]:
            _clickable("entropy", step, si, row, col, INSPECTOR_PX)
            st.caption(f"entropy of the distribution (bright = spread; at most ln {model.vocab_size})")
        with c[2]:
            chosen = int(step.tokens[0, row, col])
            V = model.vocab_size
            st.markdown(f"Position **({row}, {col})**: chosen token **{chosen}** with probability "
                        f"**{float(step.token_prob[0, row, col]):.1%}**; entropy {float(step.entropy[0, row, col]):.2f} "
                        f"nats (uniform over {V} would be {np.log(V):.2f}). Click any map to pick another position; "
                        f"the same image area stays picked on the next scale.")
            cand_tokens, cand_probs = step.candidates()
            df = pd.DataFrame({"token": [int(t) for t in cand_tokens[0, row, col]],
                               "probability": cand_probs[0, row, col].numpy().astype(float)})
            df["chosen"] = df["token"] == chosen
            st.dataframe(df, hide_index=True, height=38 + 35 * len(df), column_config={
                "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0,
                                                               format="percent"),
                "chosen": st.column_config.CheckboxColumn("chosen")})
        show = state.bound(st.toggle, "Show its attention over the scales it can see", "gen_show_att", default=False,
                           help="Computed on demand for this position (for large models generation is re-run "
                                "with attention capture, then cached).")
        if show:
            try:
                att = traces.attention_at(settings, si, int(row), int(col))
            except Exception as err:     # noqa: BLE001
                st.error(f"Could not capture attention: {loaders.friendly_error(err)}")
                return
            n_layers, n_heads = att.shape[:2]
            a, b = st.columns(2)
            with a:
                layer = state.bound(st.selectbox, "Layer", "gen_att_layer", default=n_layers - 1,
                                    options=list(range(n_layers)))
            with b:
                head = state.bound(st.selectbox, "Head", "gen_att_head", default=None, options=[None] + list(range(n_heads)),
                                   format_func=lambda h: "mean over heads" if h is None else f"head {h}")
            st.image(figures.attention_figure(settings, si, int(row), int(col), int(layer), head), width="stretch")
            st.caption("One map per scale this token can see (its own included, the token outlined); the titles "
                       "give each scale's share of the attention. Brighter = more attention.")


DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "contribution and f_hat so far",
           "probability": "probability and entropy maps", "topk": "top candidates (figure)",
           "mask": "attention mask (figure)"}


def details(settings: GenSettings, si: int, row: int, col: int) -> None:
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


st.html("""<style>
/* the overview strip's wrapper sticks to the top of the scrolling main area while the step viewer is in view */
div:has(> .st-key-gen_overview) { position: sticky; top: 3.75rem; z-index: 99; }
.st-key-gen_overview { background: white; padding-bottom: 0.25rem; border-bottom: 1px solid rgba(128, 128, 128, 0.3); }
</style>""")
step_viewer(_timer_s())
