"""Cost: VAR's K parallel steps against a raster-scan AR transformer's n^2 sequential steps, counted and measured."""
from __future__ import annotations

from types import SimpleNamespace

import altair as alt
import pandas as pd
import streamlit as st

from app import core, figures, ui

st.title("Cost: K steps instead of n² steps")
ui.explain(
    "A raster-scan autoregressive (AR) transformer generates an n x n token grid one token at a time: n² "
    "sequential steps. VAR generates it in K steps, one whole scale per step, at the price of processing the coarse "
    "scales too (L = Σ pn_k² tokens instead of n²). The tables count tokens, steps and attention FLOPs for the "
    "loaded model's width and depth (`varlite.complexity`), and show measured per-scale times on this machine.",
    "VAR's win is the number of *sequential* steps (each is a parallel batch of work). Without a KV cache its "
    "attention grows like n⁴ against AR's n⁶; with a cache, AR attention is actually smaller: read the FLOP "
    "columns carefully. In the measured times, the last (largest) scales dominate.",
    ("cost_and_scale",))

model = ui.current_model()
complexity = core.optional_module("complexity")
if complexity is None:
    st.error("This version of varlite has no complexity module (varlite.complexity); counts are unavailable.")
    st.stop()
cfg = model.var.config

st.subheader("Counted, for this model")
rows = complexity.compare(cfg)
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

st.subheader("How it grows with the final side n")
sides = [4, 8, 16, 32, 64]
rows_n = complexity.scaling_rows(sides, cfg)
st.image(figures.complexity_png(tuple(sides), cfg), width="stretch")
with st.expander("The numbers behind the curves"):
    st.dataframe(pd.DataFrame(rows_n), hide_index=True)
st.caption("Log-log axes: a slope of 2 is n², 4 is n⁴, 6 is n⁶. VAR here uses a halving schedule ending at n.")

st.subheader("Measured, on this machine")
settings = core.GenSettings(model.key, int(st.session_state.get("gen_class", 0)), int(st.session_state.get("gen_seed", 0)),
                            float(st.session_state.get("gen_cfg", model.default("cfg"))),
                            int(st.session_state.get("gen_top_k", model.default("top_k"))),
                            float(st.session_state.get("gen_top_p", model.default("top_p"))), bool(st.session_state.get("gen_smooth", False)))
if st.session_state.get("cost_timing_model") != model.key:      # a measurement of another model is stale
    st.session_state.pop("cost_timing", None)
if st.button("Measure a fresh generation", key="cost_measure",
             help="Runs generate_steps once more without tracing (the Generate page's trace also records probabilities"
                  ", so its times are a little higher)."):
    try:
        core.validate(settings)
        with st.spinner("Generating..."):
            steps = list(model.var.generate_steps([settings.label], **settings.args()))
        st.session_state.update(cost_timing=complexity.timing_rows(steps), cost_timing_model=model.key,
                                cost_timing_source="a fresh generation (not traced)")
    except ValueError as err:
        st.error(f"These settings cannot be used: {err}")
timing = st.session_state.get("cost_timing")
if timing is None:
    trace = ui.get_trace(settings)
    if trace is None:
        st.stop()
    steps = [SimpleNamespace(scale=s["scale"], side=s["side"], end=s["end"], timings=s["timings"])
             for s in trace["scales"]]
    timing = complexity.timing_rows(steps)
    st.session_state["cost_timing_source"] = "the Generate page's traced generation (cached)"
st.caption(f"Source: {st.session_state['cost_timing_source']}, class {settings.label}, seed {settings.seed}.")
tdf = pd.DataFrame(timing[:-1])                      # the last row is the total
tdf["scale"] = tdf["scale"].astype(int) + 1
total = timing[-1]
st.dataframe(tdf, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.2f")
                                                  for c in tdf.columns if c.endswith("ms") or c.endswith("%")})
st.caption(f"Total: {total['total ms']:.1f} ms for {total['tokens']} tokens "
           + ", ".join(f"({k} {v:.1f})" for k, v in total.items() if k.endswith(" ms") and k != "total ms"))
bars = tdf.melt(id_vars="scale", value_vars=[c for c in tdf.columns if c.endswith(" ms") and c != "total ms"])
st.altair_chart(alt.Chart(bars).mark_bar().encode(x="scale:O", y=alt.Y("value:Q", title="ms"), color="variable:N")
                .properties(height=220), width="stretch")
