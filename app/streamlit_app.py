"""varlite walkthrough: VAR's next-scale prediction, one scale at a time.

Run from the repository root:  streamlit run app/streamlit_app.py   (or `make app`)
Pages: Generate, Encode, Edit, Cost, Models. The model picked in the sidebar is shared by all pages.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:        # `streamlit run app/streamlit_app.py` puts app/ on the path, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import core  # noqa: E402

st.set_page_config(page_title="varlite: VAR, scale by scale", page_icon=":material/stacks:", layout="wide")

HERE = Path(__file__).resolve().parent
PAGES = [
    st.Page(HERE / "views" / "generate.py", title="Generate", icon=":material/auto_awesome:", url_path="generate", default=True),
    st.Page(HERE / "views" / "encode.py", title="Encode", icon=":material/layers:", url_path="encode"),
    st.Page(HERE / "views" / "edit.py", title="Edit", icon=":material/content_cut:", url_path="edit"),
    st.Page(HERE / "views" / "cost.py", title="Cost", icon=":material/timer:", url_path="cost"),
    st.Page(HERE / "views" / "models.py", title="Models", icon=":material/inventory_2:", url_path="models"),
]


def model_picker() -> None:
    """Sidebar: which model every page uses (kept in session_state['model_key'])."""
    choices = core.available_models(st.session_state.get("custom_paths", []))
    keys = [c.key for c in choices]
    labels = {c.key: c.label for c in choices}
    current = st.session_state.get("model_key")
    if current is None and st.query_params.get("model") in keys:      # a link may pick the model: ?model=<key>
        current = st.query_params["model"]
    if current not in keys:
        current = core.DEFAULT_MODEL if core.DEFAULT_MODEL in keys else keys[0]
    st.session_state["model_key"] = current
    with st.sidebar:
        st.selectbox("Model", keys, index=keys.index(current), format_func=labels.get, key="model_picker",
                     on_change=lambda: st.session_state.update(model_key=st.session_state["model_picker"]),
                     help="Built-in models are small and shipped with varlite. Official models appear here once "
                          "their weights are in the cache (see the Models page).")
        st.caption("VAR (Tian et al., NeurIPS 2024) generates an image coarse-to-fine: one whole token map per "
                   "step, 1x1 first, each conditioned on all coarser ones.")


page = st.navigation(PAGES)
model_picker()
page.run()
