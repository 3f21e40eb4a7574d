"""Cost: VAR's K parallel steps against a raster-scan AR transformer's n^2 sequential steps, counted and measured.

The page is ``main``: counts for the loaded model's width and depth (``varlite.complexity``), how they grow with the
final side n, and per-scale times measured on this machine (from the Generate page's shared generation, or a fresh
one on request).
"""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import figures, loaders, state, traces, ui
from app.loaders import LoadedModel
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


def measured(model: LoadedModel) -> None:
    """Per-scale times of a generation with the Generate page's settings: its shared generation, or a fresh one
    measured on request (kept in the session's view state until the settings change)."""
    st.subheader("Measured, on this machine")
    s = state.get()
    settings = ui.generation_settings(model)
    st.caption(f"Settings (those of the Generate page): {ui.settings_caption(model, settings)}.")
    try:
        traces.validate(model, settings)
    except ValueError as err:
        st.error(f"These settings cannot be used: {err}")
        st.stop()
    fresh = s.view.get("cost_fresh")
    if st.button("Measure a fresh generation", key="cost_measure",
                 help="Runs generate_steps once more, on its own (the Generate page's generation may have shared "
                      "the machine with other work, e.g. another session)."):
        with st.spinner("Generating..."):
            steps = list(model.var.generate_steps([settings.label], **settings.args()))
        fresh = s.view["cost_fresh"] = (settings, complexity.timing_rows(steps))
    if fresh is not None and fresh[0] == settings:
        timing, source = fresh[1], "a fresh generation"
    else:
        try:
            with st.spinner("Generating (the Generate page's generation, shared with it)..."):
                run = traces.finished_generation(settings)
        except Exception as err:      # noqa: BLE001
            st.error(f"Generation failed: {loaders.friendly_error(err)}")
            st.stop()
        timing, source = complexity.timing_rows(run.steps), "the Generate page's generation (computed once, shared)"
    st.caption(f"Times from {source}.")
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
    model = ui.current_model()
    counted(model.var.config)
    growth(model.var.config)
    measured(model)


main()
