"""varlite walkthrough: VAR's next-scale prediction, one scale at a time.

Run from the repository root:  streamlit run app/streamlit_app.py   (or `make app`; `make serve` for a class)
Pages: Generate, Encode, Edit, Cost, Models. The model picked in the sidebar, the sampling settings and the scale
live in one settings object per session (app/state.py), shared by all pages.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:        # `streamlit run app/streamlit_app.py` puts app/ on the path, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402

st.set_page_config(page_title="varlite: VAR, scale by scale", page_icon=":material/stacks:", layout="wide")

HERE = Path(__file__).resolve().parent
PAGES = [
    st.Page(HERE / "views" / "generate.py", title="Generate", icon=":material/auto_awesome:", url_path="generate", default=True),
    st.Page(HERE / "views" / "encode.py", title="Encode", icon=":material/layers:", url_path="encode"),
    st.Page(HERE / "views" / "edit.py", title="Edit", icon=":material/content_cut:", url_path="edit"),
    st.Page(HERE / "views" / "cost.py", title="Cost", icon=":material/timer:", url_path="cost"),
    st.Page(HERE / "views" / "models.py", title="Models", icon=":material/inventory_2:", url_path="models"),
]

page = st.navigation(PAGES)
ui.model_picker()
page.run()
