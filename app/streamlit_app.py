"""varlite walkthrough: VAR's next-scale prediction, one scale at a time.

Start it with ``varlite app`` (from any folder, after ``pip install``; Streamlit's own arguments may follow, e.g.
``--server.port 8501``), or from the repository root with ``python -m streamlit run app/streamlit_app.py`` (what
`make app` runs; `make serve` for a class). Pages: Generate, Encode, Edit, Cost, Models. The model picked in the
sidebar, the sampling settings and the scale live in one settings object per session (app/state.py), shared by all
pages.

Imports: the library is the installed package ``varlite``. The pages import the app's own modules as the package
``app`` (``from app import ui``), which is found because the folder holding ``app/`` is on ``sys.path``: ``varlite
app`` puts it there (the repository root in a git checkout, ``varlite/_course`` in an installed wheel; see
varlite/course.py), and so does ``python -m`` started in the repository root. Streamlit itself adds only the script's
folder (``app/``), so a bare ``streamlit run app/streamlit_app.py`` cannot import ``app``; the app does not edit
``sys.path`` to make up for it, and says so instead of failing with a bare traceback.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

try:
    from app import ui
except ModuleNotFoundError as err:
    if err.name != "app":
        raise
    raise ModuleNotFoundError("the walkthrough imports its modules as the package `app`: start it with `varlite app` "
                              "(or, from the repository root, `python -m streamlit run app/streamlit_app.py`)") from err

st.set_page_config(page_title="varlite: VAR, scale by scale", page_icon=":material/stacks:", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = [
    st.Page(VIEWS / "generate.py", title="Generate", icon=":material/auto_awesome:", url_path="generate", default=True),
    st.Page(VIEWS / "encode.py", title="Encode", icon=":material/layers:", url_path="encode"),
    st.Page(VIEWS / "edit.py", title="Edit", icon=":material/content_cut:", url_path="edit"),
    st.Page(VIEWS / "cost.py", title="Cost", icon=":material/timer:", url_path="cost"),
    st.Page(VIEWS / "models.py", title="Models", icon=":material/inventory_2:", url_path="models"),
]

page = st.navigation(PAGES)
ui.model_picker()
page.run()
