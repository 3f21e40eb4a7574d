"""The Generate page's picked position: clicks on the maps of a scale, those clickable maps, and the inspector of the
picked token (its probability, entropy, top candidates and, on request, its attention).

The picked point is kept as fractions of the image (``state.Settings.pick_y`` / ``pick_x``), so the same image area
stays picked on every scale; a click on a map reaches the script under the map's ``figures.pick_key``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import attention_jobs, figures, loaders, state, traces
from app.loaders import LoadedModel
from app.traces import GenSettings
from varlite.complexity import attention_capture_bytes
from varlite.core.trace import ScaleStep

CLICKABLE = ("tokens", "probability", "entropy")
INSPECTOR_PX = 150
MEAN_OVER_HEADS = "mean"      # the attention view's head choice that averages the heads
TOP_KEYS = 10                 # the keys listed by weight under the attention maps


def take_clicks(si: int, pn: int) -> tuple[int, int]:
    """Apply a click on one of scale si's maps (drawn with the current position) to the picked point; return the
    picked (row, col) of this scale (the same image area on every scale). Read before anything of the scale is
    drawn, so that every panel shows the new position."""
    s = state.get()
    row, col = s.position(pn)
    for name in CLICKABLE:
        cells = figures.picked_cells(st.session_state.get(figures.pick_key(f"gen_pick_{name}", si, row, col)), pn)
        if cells - {(row, col)}:
            s.pick(*sorted(cells - {(row, col)})[0], pn)
            break
    return s.position(pn)


def step_map(model: LoadedModel, name: str, step: ScaleStep, si: int, row: int, col: int,
             px: int = figures.DISPLAY_PX) -> None:
    """A clickable map of scale si of setting A ("tokens", "probability" or "entropy"), the picked token framed."""
    probs, entropy = step.token_prob[0].numpy(), step.entropy[0].numpy()
    if name == "tokens":
        chart = figures.token_chart(step.tokens[0].numpy(), figures.codebook_colors(model.key), {(row, col)}, probs,
                                    entropy, px=px)
    else:
        chart = figures.step_chart(name, step.tokens[0].numpy(), probs, entropy, model.vocab_size, {(row, col)}, px)
    st.vega_lite_chart(chart.data, chart.spec, key=figures.pick_key(f"gen_pick_{name}", si, row, col),
                       on_select="rerun", selection_mode=figures.PICK, width="content", theme=None)


def inspector(model: LoadedModel, step: ScaleStep, settings: GenSettings, si: int, row: int, col: int,
              with_tokens: bool) -> None:
    """The picked position of the current scale: how sure the model was there, its top candidates and, on
    request, its attention; ``with_tokens`` adds the clickable token map (when the panels above cannot hold it)."""
    V = model.vocab_size
    with st.expander(f"Inspect the picked position ({row}, {col}) of this scale (A)", expanded=True):
        c = st.columns([1, 1, 1, 2] if with_tokens else [1, 1, 2])
        if with_tokens:
            with c.pop(0):
                step_map(model, "tokens", step, si, row, col, INSPECTOR_PX)
                st.caption("tokens (codebook colours)")
        with c[0]:
            step_map(model, "probability", step, si, row, col, INSPECTOR_PX)
            st.caption("probability of the chosen token (dark = unsure)")
        with c[1]:
            step_map(model, "entropy", step, si, row, col, INSPECTOR_PX)
            st.caption(f"entropy of the distribution (bright = spread; at most ln {V})")
        with c[2]:
            chosen = int(step.tokens[0, row, col])
            st.markdown(f"Position **({row}, {col})**: chosen token **{chosen}** with probability "
                        f"**{float(step.token_prob[0, row, col]):.1%}**; entropy "
                        f"{float(step.entropy[0, row, col]):.2f} nats (uniform over {V} would be {np.log(V):.2f}). "
                        f"Click any map to pick another position; the same image area stays picked on the next scale.")
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
                                "up to this scale capturing this position's attention only, then cached).")
        if show:
            _attention(model, settings, si, row, col)


def capture_note(model: LoadedModel, si: int) -> str | None:
    """What the attention shown at scale si holds when the trace does not keep it (None when it does): the picked
    token's row alone, captured by generating again up to scale si with ``capture_attention={si: [i]}`` -- the same
    numbers as that row of a capture of all the scale's queries, at a fraction of its memory."""
    if traces.keeps_attention(model):
        return None
    pn = model.patch_nums[si]
    one_query, every_query = (attention_capture_bytes(model.var.config, batch=2, queries=queries)[si]
                              for queries in (1, None))
    return (f"This is the picked token's row of attention only: the generation was run again up to scale {si + 1} "
            f"keeping every layer's weights for this one query ({readable_size(one_query)} with guidance's two "
            f"rows; all {pn}x{pn} queries of the scale would hold {readable_size(every_query)}).")


def readable_size(nbytes: int) -> str:
    """A size with one decimal in kB, MB or GB (2^10, 2^20, 2^30 bytes), the largest unit it reaches (kB below)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} kB"


def top_keys(weights_Lk: np.ndarray, patch_nums: tuple[int, ...], k: int = TOP_KEYS) -> pd.DataFrame:
    """The ``k`` keys with the most weight, heaviest first: their scale (1-based), position in it and weight."""
    starts = np.cumsum([0] + [pn * pn for pn in patch_nums])
    rows = []
    for key in np.argsort(weights_Lk, kind="stable")[::-1][:k]:
        si = int(np.searchsorted(starts, key, side="right")) - 1
        r, c = divmod(int(key - starts[si]), patch_nums[si])
        rows.append({"scale": si + 1, "position": f"({r}, {c})", "weight": float(weights_Lk[key])})
    return pd.DataFrame(rows)


def _attention(model: LoadedModel, settings: GenSettings, si: int, row: int, col: int) -> None:
    """The picked token's attention over every scale it can see, for a chosen layer and head (or their mean), and
    the keys it weighs most."""
    try:
        att = attention_jobs.attention_at(settings, si, int(row), int(col))
    except Exception as err:     # noqa: BLE001
        st.error(f"Could not capture attention: {loaders.friendly_error(err)}")
        return
    n_layers, n_heads = att.shape[:2]
    a, b = st.columns(2)
    with a:
        layer = state.bound(st.selectbox, "Layer", "gen_att_layer", default=n_layers - 1,
                            options=list(range(n_layers)))
    with b:          # "mean" is an option of its own: a None value would show as no choice ("Choose an option")
        head = state.bound(st.selectbox, "Head", "gen_att_head", default=MEAN_OVER_HEADS,
                           options=[MEAN_OVER_HEADS] + list(range(n_heads)),
                           format_func=lambda h: "mean over heads" if h == MEAN_OVER_HEADS else f"head {h}")
    st.image(figures.attention_figure(settings, si, int(row), int(col), int(layer),
                                      None if head == MEAN_OVER_HEADS else int(head)), width="stretch")
    st.caption("One map per scale this token can see (its own included, the token outlined); the titles "
               "give each scale's share of the attention. Brighter = more attention.")
    weights_nHLk = att[int(layer)]
    weights_Lk = weights_nHLk.mean(axis=0) if head == MEAN_OVER_HEADS else weights_nHLk[int(head)]
    st.dataframe(top_keys(weights_Lk, model.patch_nums), hide_index=True, column_config={
        "weight": st.column_config.ProgressColumn("weight", min_value=0.0, max_value=1.0, format="percent")})
    st.caption(f"The {min(TOP_KEYS, len(weights_Lk))} of its {len(weights_Lk):,} keys it weighs most.")
    note = capture_note(model, si)
    if note:
        st.caption(note)
