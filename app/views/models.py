"""Models: what is loaded, where its weights came from, and how to get the official ones."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from app import core, ui


def show_model_card(card: str, folder) -> None:
    """A model card in markdown; its image lines (``![alt](file.png)``, files beside the card) become st.image,
    since the browser cannot fetch files relative to the card."""
    text = []
    for line in card.splitlines():
        image = re.fullmatch(r"!\[(.*)\]\(([^)/]+)\)", line.strip())
        if image:
            st.markdown("\n".join(text))
            st.image(str(Path(folder) / image.group(2)), caption=image.group(1))
            text = []
        else:
            text.append(line)
    st.markdown("\n".join(text))


st.title("Models")
ui.explain(
    "Every page uses the model picked in the sidebar. Built-in models are small, trained with varlite on a CPU and "
    "shipped with it. The official ImageNet-256 models (VAR-d16 ... d30, 310 M to 2 B parameters) share one "
    "tokenizer (`vae_ch160v4096z32.pth`); once their files are in the cache folder they appear in the picker.",
    "An official checkpoint is loaded strictly: every tensor name and shape must match the official layout, and "
    "files are read with `torch.load(weights_only=True)`, so a corrupt or foreign file is refused with a message.",
    ("training", "the_real_thing"))

model = ui.current_model()

st.subheader(f"Loaded: {model.name}")
counts = model.param_counts()
c = st.columns(3)
c[0].metric("VQVAE parameters", f"{counts['VQVAE (tokenizer)'] / 1e6:.2f} M")
c[1].metric("VAR parameters", f"{counts['VAR (transformer)'] / 1e6:.2f} M")
c[2].metric("Scales K / tokens L", f"{len(model.patch_nums)} / {model.var.L}")
st.markdown(f"**Weights from:** {model.source}  \n**Verification:** {model.verified}")
for f in model.files:
    st.caption(f"file: `{f}`")
a, b = st.columns(2)
with a:
    st.markdown("**VAR config**")
    st.json(core.asdict_config(model.var.config), expanded=False)
with b:
    st.markdown("**VQVAE config**")
    st.json(core.asdict_config(model.vqvae.config), expanded=False)
if model.card:
    with st.expander("Model card", expanded=True):
        show_model_card(model.card, core.optional_module("builtin").WEIGHTS_DIR)   # only built-ins have cards

# ------------------------------------------------------------------------------------------------ built-in cards
builtin = core.optional_module("builtin")
names = core.builtin_names()
if names:
    st.subheader("Model cards of the shipped weights")
    for name in names:
        with st.expander(f"Built-in: {name}"):
            try:
                show_model_card(builtin.model_card(name), builtin.WEIGHTS_DIR)
            except Exception as err:      # noqa: BLE001
                st.warning(f"No model card for {name}: {err}")

# ------------------------------------------------------------------------------------------------ official weights
st.subheader("Official weights")
pretrained = core.optional_module("pretrained")
if pretrained is None:
    st.error("This version of varlite cannot load official checkpoints (varlite.pretrained is missing).")
    st.stop()
try:
    from varlite.download import varlite_home
    home = varlite_home()
except OSError as err:
    st.error(f"The cache folder cannot be used: {err}")
    st.stop()
rows = []
for name, entry in pretrained.OFFICIAL_FILES.items():
    path = pretrained.official_path(name)
    rows.append({"name": name, "file": entry.filename, "size (MB)": entry.approx_mb,
                 "in the cache": "yes" if path.exists() else "no"})
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.markdown(f"Cache folder: `{home}` (set `VARLITE_HOME` to change it). From a terminal: "
            "`python -m varlite download vae d16`. Each VAR file needs the `vae` file too.")

choices = [n for n in pretrained.OFFICIAL_FILES if n != "d36"]
a, b = st.columns([2, 3])
want = a.multiselect("Download into the cache", choices, default=["vae", "d16"], key="models_download_choice")
if a.button("Download", key="models_download", help="Needs internet; resumes where a previous try stopped."):
    for name in want:
        try:
            with st.spinner(f"Downloading {name} (~{pretrained.OFFICIAL_FILES[name].approx_mb} MB)..."):
                pretrained.download_official(name, progress=False)
            st.success(f"{name}: downloaded and verified.")
        except Exception as err:      # noqa: BLE001 -- offline, HTTP errors, corrupt files: all explained
            st.error(f"{name}: {err}")
            break
    else:
        st.rerun()

with b:
    st.markdown("**Or use files you already have**")
    vae_path = st.text_input("VQVAE file (e.g. vae_ch160v4096z32.pth)", key="models_vae_path")
    var_path = st.text_input("VAR file (e.g. var_d16.pth)", key="models_var_path")
    if st.button("Load these files", key="models_load_paths"):
        from pathlib import Path
        missing = [p for p in (vae_path, var_path) if not p or not Path(p).expanduser().is_file()]
        if missing:
            st.error("No such file: " + ", ".join(f"`{p or '(empty)'}`" for p in missing))
        else:
            key = f"path:{Path(vae_path).expanduser()}|{Path(var_path).expanduser()}"
            try:
                with st.spinner("Loading and verifying..."):
                    core.load_model(key)
            except Exception as err:      # noqa: BLE001 -- corrupt / foreign / unsafe checkpoints
                st.error(f"These files cannot be loaded: {core.friendly_error(err)}")
            else:
                paths = st.session_state.setdefault("custom_paths", [])
                pair = tuple(key[len("path:"):].split("|", 1))
                if pair not in paths:
                    paths.append(pair)
                st.session_state["model_key"] = key
                st.session_state.pop("model_picker", None)
                st.rerun()
