"""Generate: watch VAR draw an image coarse to fine, one scale per step."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from app import core, figures, ui

PLAY_INTERVAL_S = 1.0

st.title("Generate: next-scale prediction, step by step")
ui.explain(
    "VAR does not predict an image token by token. It predicts a whole **token map** per step: first 1x1, then "
    "2x2, 3x3, ... up to the final grid. Every token of a scale is sampled at once, conditioned on the class and on "
    "all coarser scales. Each scale's tokens are looked up in the codebook, upsampled and added to `f_hat`, the "
    "running latent; decoding `f_hat` after k scales gives the picture so far.\n\n"
    "Panels for the current scale: **tokens** (one colour per codebook entry), **residual** (how much this scale "
    "adds at each position of the latent), **decoded so far**, and the **attention mask** (rows = queries, "
    "columns = keys; orange = this scale's rows: they see every coarser scale and their own).",
    "The first few scales fix the layout and colours, the last ones only add detail: the residual panel gets "
    "fainter as the picture stops changing. Raise the guidance (cfg) and watch the class become clearer; "
    "select a position to see how sure the model was.",
    ("next_scale", "inside_the_transformer", "sampling"))

model = ui.current_model()
K = len(model.patch_nums)
colors = figures.codebook_colors(model.key)
st.caption(f"Model **{model.name}**: {K} scales {' → '.join(f'{p}x{p}' for p in model.patch_nums)}, "
           f"L = {model.var.L} tokens, codebook of {model.var.config.vocab_size} entries, "
           f"{model.image_size}x{model.image_size} px images.")

settings_a = ui.sampling_settings(model, "gen")
compare = st.toggle("Compare with a second setting (side by side, same scale)", key="gen_compare")
settings_b = None
if compare:
    st.markdown("**Setting B** (top-k, top-p and smoothing as above)")
    settings_b = ui.sampling_settings(model, "genb", default_seed=1, compact=True)

trace_a = ui.get_trace(settings_a)
trace_b = ui.get_trace(settings_b) if settings_b is not None else None
if trace_a is None or (compare and trace_b is None):
    st.stop()

# ------------------------------------------------------------------------------------------------ step state
ss = st.session_state
ss.setdefault("gen_scale", 1)
ss.setdefault("gen_playing", False)
ss["gen_scale"] = int(min(max(ss["gen_scale"], 1), K))


def _go(delta: int | None = None, to: int | None = None) -> None:
    ss["gen_playing"] = False
    ss["gen_scale"] = int(min(max((to if to is not None else ss["gen_scale"] + delta), 1), K))


def _overview(settings: core.GenSettings, trace: dict, k: int, name: str) -> None:
    sides = " · ".join(f"**{p}x{p}**" if i == k else f"{p}x{p}" for i, p in enumerate(trace["patch_nums"]))
    st.image(figures.overview_strip(settings, k), output_format="PNG",
             caption=f"{name + ': ' if name else ''}decoded image after every scale ({sides.replace('**', '')}; "
                     f"scale {k + 1} framed, later scales faded)")


@st.fragment(run_every=PLAY_INTERVAL_S if ss.get("gen_playing") else None)
def step_viewer(trace_a: dict, trace_b: dict | None, settings_b: core.GenSettings | None) -> None:
    t0 = time.perf_counter()
    # advance while playing (before the slider exists, so its state may be changed)
    if ss["gen_playing"]:
        now = time.monotonic()
        if now - ss.get("gen_last_tick", 0.0) >= 0.8 * PLAY_INTERVAL_S:
            ss["gen_last_tick"] = now
            if ss["gen_scale"] < K:
                ss["gen_scale"] += 1
            if ss["gen_scale"] >= K:
                ss["gen_playing"] = False
                st.rerun()          # whole page: drop the timer
    left, right = st.columns([1, 1], vertical_alignment="bottom")
    with left, st.container(horizontal=True, gap="small"):        # buttons as wide as their labels
        st.button("Reset", icon=":material/first_page:", on_click=_go, kwargs=dict(to=1), key="gen_reset",
                  help="Back to the first scale")
        st.button("Previous", icon=":material/chevron_left:", on_click=_go, kwargs=dict(delta=-1), key="gen_prev",
                  disabled=ss["gen_scale"] <= 1)
        st.button("Next", icon=":material/chevron_right:", on_click=_go, kwargs=dict(delta=1), key="gen_next",
                  disabled=ss["gen_scale"] >= K, type="primary")
        if ss["gen_playing"]:
            if st.button("Pause", icon=":material/pause:", key="gen_pause"):
                ss["gen_playing"] = False
                st.rerun()
        elif st.button("Play", icon=":material/play_arrow:", key="gen_play",
                       help=f"One scale every {PLAY_INTERVAL_S:.0f} s"):
            ss["gen_playing"] = True
            ss["gen_last_tick"] = time.monotonic()
            if ss["gen_scale"] >= K:
                ss["gen_scale"] = 1
            st.rerun()
    with right:
        st.slider("Scale", 1, K, key="gen_scale", help="Scrub through the scales")
    k = ss["gen_scale"] - 1

    traces = [("A", trace_a, settings_a)] + ([("B", trace_b, settings_b)] if trace_b is not None else [])
    with st.container(key="gen_overview"):          # sticky (see the CSS below): stays in view while scrolling
        for name, tr, settings in traces:
            _overview(settings, tr, k, name if trace_b is not None else "")
    s_a = trace_a["scales"][k]
    st.subheader(f"Scale {k + 1} of {K}: {s_a['side']}x{s_a['side']} = {s_a['side'] ** 2} tokens, "
                 f"predicted in one step (guidance here t = {s_a['cfg']:.2f})")
    cols = st.columns([3, 1] if trace_b is None else [3, 3, 1])
    for (name, tr, settings), col in zip(traces, cols):
        with col:
            pc = st.columns(3)
            for pcol, (cap, img) in zip(pc, figures.step_panels(settings, k)):
                pcol.image(img, caption=cap if trace_b is None else f"{name}: {cap}", width="stretch",
                           output_format="PNG")
    with cols[-1]:
        st.image(figures.block_mask(model.patch_nums, k), width="stretch", output_format="PNG",
                 caption=f"attention mask, L={trace_a['total_tokens']}: scale {k + 1}'s rows in orange")

    inspector(trace_a, k, settings_a)
    details(settings_a, k)
    ss["gen_render_ms"] = (time.perf_counter() - t0) * 1000
    st.caption(f"step rendered in {ss['gen_render_ms']:.0f} ms on the server")


def inspector(trace: dict, k: int, settings: core.GenSettings) -> None:
    """One position of the current scale: its top-k candidates and, on request, its attention."""
    s = trace["scales"][k]
    side = s["side"]
    with st.expander("Inspect a position of this scale (A)", expanded=True):
        c = st.columns([1, 1, 2, 3])
        row = c[0].number_input("Row", 0, side - 1, min(ss.get("gen_row", 0), side - 1), key=f"gen_row_{side}")
        col = c[1].number_input("Column", 0, side - 1, min(ss.get("gen_col", 0), side - 1), key=f"gen_col_{side}")
        ss["gen_row"], ss["gen_col"] = row, col
        with c[2]:
            st.image(figures.png(figures.mark_cell(figures.token_map(s["tokens"], colors), side, row, col)),
                     caption=f"position ({row}, {col})", width=160, output_format="PNG")
        with c[3]:
            if s["topk_probs"] is not None:
                chosen = int(s["tokens"][row, col])
                st.markdown(f"Chosen token **{chosen}** with probability **{s['token_prob'][row, col]:.1%}**; "
                            f"entropy {s['entropy'][row, col]:.2f} nats "
                            f"(uniform over {model.var.config.vocab_size} would be "
                            f"{np.log(model.var.config.vocab_size):.2f}).")
                df = pd.DataFrame({"token": [int(t) for t in s["topk_tokens"][row, col]],
                                   "probability": s["topk_probs"][row, col].astype(float)})
                df["chosen"] = df["token"] == chosen
                st.dataframe(df, hide_index=True, height=38 + 35 * len(df), column_config={
                    "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0,
                                                                   format="percent"),
                    "chosen": st.column_config.CheckboxColumn("chosen")})
        show_att = st.toggle("Show its attention over the scales it can see", key="gen_show_att",
                             help="Computed on demand for this position (generation is re-run with attention "
                                  "capture, then cached).")
        if show_att:
            try:
                att = core.attention_at(settings, k, int(row), int(col))
            except Exception as err:     # noqa: BLE001
                st.error(f"Could not capture attention: {core.friendly_error(err)}")
                return
            n_layers, n_heads = att.shape[:2]
            a, b = st.columns(2)
            layer = a.selectbox("Layer", list(range(n_layers)), index=n_layers - 1, key="gen_att_layer")
            head = b.selectbox("Head", [None] + list(range(n_heads)), key="gen_att_head",
                               format_func=lambda h: "mean over heads" if h is None else f"head {h}")
            st.image(figures.attention_figure(settings, k, int(row), int(col), int(layer), head), width="stretch")
            st.caption("One map per scale this token can see (its own included, the token outlined); the titles "
                       "give each scale's share of the attention. Brighter = more attention.")


DETAILS = {"none": "none", "tokens": "token maps so far", "latents": "residual and f_hat so far",
           "probability": "probability and entropy maps", "topk": "top-k candidates (figure)",
           "mask": "attention mask (figure)"}


def details(settings: core.GenSettings, k: int) -> None:
    """The lessons' matplotlib figures for this scale, drawn on request (each is cached once drawn)."""
    kind = st.segmented_control("Detailed figure (as in the lessons)", list(DETAILS), format_func=DETAILS.get,
                                default="none", key="gen_detail")
    if kind in (None, "none"):
        return
    try:
        if kind == "mask":
            png = figures.mask_figure(model.patch_nums, k)
        else:
            png = figures.generation_figure(kind, settings, k, int(ss.get("gen_row", 0)), int(ss.get("gen_col", 0)))
    except Exception as err:      # noqa: BLE001
        st.error(f"Could not draw this figure: {core.friendly_error(err)}")
        return
    st.image(png, width="stretch" if kind in ("tokens", "latents") else 720)


st.html("""<style>
/* the overview strip's wrapper sticks to the top of the scrolling main area while the step viewer is in view */
div:has(> .st-key-gen_overview) { position: sticky; top: 3.75rem; z-index: 99; }
.st-key-gen_overview { background: white; padding-bottom: 0.25rem; border-bottom: 1px solid rgba(128, 128, 128, 0.3); }
</style>""")
step_viewer(trace_a, trace_b, settings_b)
