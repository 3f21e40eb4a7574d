"""Cost: VAR's K parallel steps against a raster-scan AR transformer's n^2 sequential steps, counted and measured.

The page is ``main``: counts for the loaded model's width and depth (``varlite.complexity``), how they grow with the
final side n, and per-scale times measured on this machine, warm (``warm_timing``: an untimed warm-up run first, so
that one-time costs of the first run do not land on the first scales).
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st
import torch

from app import figures, loaders, state, traces, ui
from app.loaders import LoadedModel
from app.traces import GenSettings
from varlite import complexity

SIDES = [4, 8, 16, 32, 64]          # final sides n of the growth curves


def counted(config) -> None:
    """Tokens, sequential steps and attention FLOPs of VAR and of a raster-scan AR transformer of this config."""
    st.subheader("Counted, for this model")
    rows = complexity.compare(config)
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, column_config={c: st.column_config.NumberColumn(format="localized")
                                                     for c in df.columns if c != "model"})
    var_row, ar_row = rows
    m = st.columns(3)
    m[0].metric("Sequential steps", f"{var_row['steps']} vs {ar_row['steps']}",
                f"{ar_row['steps'] / var_row['steps']:.0f}x fewer", delta_color="off")
    m[1].metric("Tokens processed", f"{var_row['tokens']:,} vs {ar_row['tokens']:,}",
                f"{var_row['tokens'] / ar_row['tokens']:.2f}x", delta_color="off")
    m[2].metric("Attention FLOPs without a cache", f"{var_row['attn FLOPs (no cache)']:.2e}",
                f"AR: {ar_row['attn FLOPs (no cache)']:.2e}", delta_color="off")


def growth(config) -> None:
    """The counts against the final side n, on log-log axes, and the numbers behind them."""
    st.subheader("How it grows with the final side n")
    st.image(figures.complexity_png(tuple(SIDES), config), width="stretch")
    with st.expander("The numbers behind the curves"):
        st.dataframe(pd.DataFrame(complexity.scaling_rows(SIDES, config)), hide_index=True)
    st.caption("Log-log axes: a slope of 2 is n², 4 is n⁴, 6 is n⁶. VAR here uses a halving schedule ending at n.")


TIMED_RUNS_SMALL = 3          # timed runs of a small model (the fastest is shown); a large model is timed once


@st.cache_data(show_spinner=False, max_entries=16, ttl=3600)
def warm_timing(settings: GenSettings, attempt: int = 0) -> list[dict]:
    """``complexity.timing_rows`` of a warm generation of ``settings``: one untimed warm-up run, then timed runs of
    the same generation (``TIMED_RUNS_SMALL`` for a small model, one for a large one), the fastest shown. The first
    run of a model in a process pays one-time costs (memory allocation, the CPU library choosing its kernels for
    every new tensor shape) that fall on the scales where they first occur; on a shared machine, other work only
    ever adds time, so the fastest run is the least disturbed. Shared by every session; ``attempt`` asks for a new
    measurement."""
    model = loaders.load_model(settings.model_key)
    runs = 1 if traces.streams(model) else TIMED_RUNS_SMALL
    with torch.inference_mode():
        for _ in model.var.generate_steps([settings.label], **settings.args()):     # the warm-up run, not timed
            pass
        tables = [complexity.timing_rows(list(model.var.generate_steps([settings.label], **settings.args())))
                  for _ in range(runs)]
    return min(tables, key=lambda rows: rows[-1]["total ms"])


def measured(model: LoadedModel) -> None:
    """Per-scale times of a generation with the Generate page's settings, measured warm (``warm_timing``); a button
    measures again (the machine is shared: other sessions' work shows in the times)."""
    st.subheader("Measured, on this machine")
    s = state.get()
    settings = ui.generation_settings(model)
    st.caption(f"Settings (those of the Generate page): {ui.settings_caption(model, settings)}.")
    try:
        traces.validate(model, settings)
    except ValueError as err:
        st.error(f"These settings cannot be used: {loaders.without_server_paths(str(err))}")
        st.stop()
    attempt = s.view.get("cost_attempt", 0)
    if st.button("Measure again", key="cost_measure",
                 help="Runs the measurement again (the machine may have been busy with other work, e.g. "
                      "another session)."):
        attempt = s.view["cost_attempt"] = attempt + 1
    with st.spinner("Measuring: a warm-up generation, then the timed ones..."):
        timing = warm_timing(settings, attempt)
    timed = "once" if traces.streams(model) else f"{TIMED_RUNS_SMALL} times (the fastest run is shown)"
    st.caption(f"Times of a fresh generation{f' (measurement {attempt + 1})' if attempt else ''}, measured warm: "
               f"one untimed warm-up run, then the same generation timed {timed}. The first run of a model pays "
               "one-time costs (allocating memory, choosing the CPU's kernels for each new tensor shape) that would "
               "land on the first scales; other work on a shared machine only adds time.")
    tdf = pd.DataFrame(timing[:-1])                      # the last row is the total
    tdf["scale"] = tdf["scale"].astype(int) + 1
    total = timing[-1]
    st.dataframe(tdf, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.2f")
                                                      for c in tdf.columns if c.endswith("ms") or c.endswith("%")})
    st.caption(f"Total: {total['total ms']:.1f} ms for {total['tokens']} tokens "
               + ", ".join(f"({k} {v:.1f})" for k, v in total.items() if k.endswith(" ms") and k != "total ms"))
    bars = tdf.melt(id_vars="scale", value_vars=[c for c in tdf.columns if c.endswith(" ms") and c != "total ms"])
    st.altair_chart(alt.Chart(bars).mark_bar().encode(x="scale:O", y=alt.Y("value:Q", title="ms"),
                                                      color="variable:N").properties(height=220), width="stretch")


def cost_view(model: LoadedModel) -> None:
    """The page's three parts: counted costs, how they grow with the side, measured times."""
    counted(model.var.config)
    growth(model.var.config)
    measured(model)


def main() -> None:
    st.title("Cost: K steps instead of n² steps")
    ui.explain(
        "A raster-scan autoregressive (AR) transformer generates an n x n token grid one token at a time: n² "
        "sequential steps. VAR generates it in K steps, one whole scale per step, at the price of processing the "
        "coarse scales too (L = Σ pn_k² tokens instead of n²). The tables count tokens, steps and attention FLOPs "
        "for the loaded model's width and depth (`varlite.complexity`), and show measured per-scale times on this "
        "machine.",
        "VAR's win is the number of *sequential* steps (each is a parallel batch of work). Without a KV cache its "
        "attention grows like n⁴ against AR's n⁶; with a cache, AR attention is actually smaller: read the FLOP "
        "columns carefully. In the measured times, the last (largest) scales dominate.",
        ("cost_and_scale",))
    ui.drawn_or_explained(cost_view, ui.current_model())


main()
