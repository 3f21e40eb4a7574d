"""Models: what is loaded, where its weights came from, your own model (a training run or uploaded weights), and how
to get the official ones. Every section is a function called by ``main`` with what it needs; the session's
settings come from ``state.get()``."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from app import loaders, official_files, registry, state, training_runs, ui, uploads
from app.loaders import LoadedModel
from varlite import builtin, pretrained
from varlite.download import varlite_home


CARD_IMAGE_MAX_PX = 720


def show_model_card(card: str, folder) -> None:
    """A model card in markdown; its image lines (``![alt](file.png)``, files beside the card) become st.image at
    their own width (at most CARD_IMAGE_MAX_PX), since the browser cannot fetch files relative to the card."""
    text = []
    for line in card.splitlines():
        image = re.fullmatch(r"!\[(.*)\]\(([^)/]+)\)", line.strip())
        if image:
            st.markdown("\n".join(text))
            path = Path(folder) / image.group(2)
            with Image.open(path) as im:
                width = min(im.width, CARD_IMAGE_MAX_PX)
            st.image(str(path), caption=image.group(1), width=width)
            text = []
        else:
            text.append(line)
    st.markdown("\n".join(text))


def config_dict(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def loaded_model_section(model: LoadedModel) -> None:
    """The loaded model: parameter counts, where its weights came from, its configs, classes and model card."""
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
        st.json(config_dict(model.var.config), expanded=False)
    with b:
        st.markdown("**VQVAE config**")
        st.json(config_dict(model.vqvae.config), expanded=False)
    named = [model.class_label(i) for i in range(model.num_classes) if model.class_names[i]]
    st.caption(f"{model.num_classes} classes" + (f": {', '.join(named[:12])}{' ...' if len(named) > 12 else ''}"
                                                 if named else " (no names known: the pages show numbers)"))
    if model.card:
        with st.expander("Model card", expanded=True):
            show_model_card(model.card, model.card_folder or builtin.WEIGHTS_DIR)


# ------------------------------------------------------------------------------------------------ your own model
def _adopt_own(key: str, label: str) -> None:
    """Load ``key`` (errors shown in the page), offer it in this session's picker and switch every page to it."""
    try:
        with st.spinner("Loading and verifying..."):
            loaded = loaders.load_model(key)
    except Exception as err:      # noqa: BLE001 -- missing / damaged / foreign / unsafe files: all explained
        st.error(f"This model cannot be loaded: {loaders.friendly_error(err)}")
        return
    registry.remember_own_model(loaded, label)
    state.get().model_key = loaded.key
    st.rerun()


def own_model_section() -> None:
    """Your own model: a train-var run from the model folders (found or typed), or uploaded weights files."""
    st.subheader("Your own model")
    st.markdown("A model you trained with `python -m varlite train-tokenizer ...` then `python -m varlite train-var "
                "--tokenizer <its run> ...` loads here from its **run folder** (the `checkpoint.pt` of a train-var "
                "run holds the transformer and its tokenizer) or as **uploaded weights**. Class names come with it "
                "when its dataset has them (Shapes, CIFAR-10, or the sub-folders of an image folder). Once loaded it "
                "is in the sidebar's model picker and every page uses it.")
    run_tab, upload_tab = st.tabs(["A training run on this server", "Upload weights files"])
    with run_tab:
        _run_tab()
    with upload_tab:
        _upload_tab()


def _run_tab() -> None:
    try:
        folders = ", ".join(f"`{f}`" for f in pretrained.model_folders())
        runs = training_runs.training_runs()
    except OSError as err:
        folders, runs = f"(unusable: {err})", []
    st.caption(f"Runs are read only from the model folders: {folders}. Train into one "
               "(`--run-dir $VARLITE_HOME/runs/mine`) or add your runs folder to `VARLITE_MODEL_DIRS`.")
    if runs:
        found = state.bound(st.selectbox, "Training runs found in the model folders", "models_run_found",
                            options=[str(r) for r in runs])
        if st.button("Load this run", key="models_load_found_run", type="primary"):
            _adopt_own(f"run:{found}", f"Your run: {Path(found).name}")
    else:
        st.info("No train-var run in the model folders yet (a run folder holds config.json and checkpoint.pt).")
    run_text = state.bound(st.text_input, "Or type a run folder (or its checkpoint.pt)", "models_run_path",
                           default="", placeholder="runs/mine")
    if st.button("Load the typed run", key="models_load_run"):
        try:
            run_path = pretrained.resolve_model_path(run_text)
        except pretrained.NotInModelFolderError as err:
            st.error(str(err))
        else:
            _adopt_own(f"run:{run_path}", f"Your run: {run_path.name if run_path.is_dir() else run_path.parent.name}")


def _upload_tab() -> None:
    limit = uploads.weights_upload_limit_mb()
    st.caption(f"Up to {limit} MB per file (the server's `maxUploadSize`; larger files load from a run folder). "
               "Files are read with `torch.load(weights_only=True)` and checked strictly: every tensor name and "
               f"shape must match the model they describe. The server keeps the last {uploads.MAX_UPLOADS} uploads.")
    up_var = st.file_uploader("The VAR: a train-var `checkpoint.pt`, or a VAR state_dict `.pth`",
                              key="models_upload_var", type=["pt", "pth"], max_upload_size=limit)
    up_vae = st.file_uploader("Its VQVAE state_dict `.pth` (only needed with a VAR state_dict)",
                              key="models_upload_vae", type=["pt", "pth"], max_upload_size=limit)
    if st.button("Load the uploaded files", key="models_load_upload", disabled=up_var is None):
        try:
            store = uploads.upload_store()
            var_sha = store.put(up_var.getvalue(), up_var.name)
            vae_sha = store.put(up_vae.getvalue(), up_vae.name) if up_vae is not None else ""
        except uploads.UploadedFileError as err:
            st.error(str(err))
        else:
            _adopt_own(f"upload:{var_sha}" + (f"|{vae_sha}" if vae_sha else ""), f"Uploaded: {up_var.name}")


# ------------------------------------------------------------------------------------------------ built-in cards
def builtin_cards_section() -> None:
    names = builtin.list_builtin()
    if names:
        st.subheader("Model cards of the shipped weights")
        for name in names:
            with st.expander(f"Built-in: {name}"):
                try:
                    show_model_card(builtin.model_card(name), builtin.WEIGHTS_DIR)
                except builtin.BuiltinError as err:
                    st.warning(f"No model card for {name}: {err}")


# ------------------------------------------------------------------------------------------------ official weights
def _forget_official() -> None:
    """Drop loaded official models and the picker's stale choice after files changed."""
    loaders.reset_official()
    state.get().model_key = ""


def official_weights_section(load_error: BaseException | None) -> None:
    """The official files in the cache: which are there, the damaged ones (to delete or download again), a
    download, and files the user already has. ``load_error``: why the picked model failed to load, if it did."""
    st.subheader("Official weights")
    try:
        home = varlite_home()
    except OSError as err:
        st.error(f"The cache folder cannot be used: {err}")
        st.stop()
    problems = official_files.official_file_problems()
    if load_error is not None:
        for name in official_files.files_named_in(load_error):
            problems.setdefault(name, loaders.friendly_error(load_error))
    rows = []
    for name, entry in pretrained.OFFICIAL_FILES.items():
        path = pretrained.official_path(name)
        status = "no" if not path.is_file() else ("yes, damaged" if name in problems else "yes")
        rows.append({"name": name, "file": entry.filename, "size (MB)": entry.approx_mb, "in the cache": status})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.markdown(f"Cache folder: `{home}` (set `VARLITE_HOME` to change it). From a terminal: "
                "`python -m varlite download vae d16`. Each VAR file needs the `vae` file too.")
    for name, problem in problems.items():
        _damaged_file(name, problem)
    a, b = st.columns([2, 3])
    with a:
        _download()
    with b:
        _files_you_have()


def _damaged_file(name: str, problem: str) -> None:
    """A damaged official file: what is wrong, and buttons to delete it or download it again."""
    path = pretrained.official_path(name)
    with st.container(border=True):
        st.error(f"**{name}**: `{path}` cannot be used: {problem}")
        a, b = st.columns(2)
        if a.button(f"Delete {path.name}", key=f"models_delete_{name}", icon=":material/delete:"):
            path.unlink(missing_ok=True)
            _forget_official()
            st.rerun()
        if b.button(f"Download {name} again", key=f"models_redownload_{name}", icon=":material/download:",
                    help="Deletes the damaged file, then downloads it (needs internet)."):
            path.unlink(missing_ok=True)
            _forget_official()
            try:
                with st.spinner(f"Downloading {name} (~{pretrained.OFFICIAL_FILES[name].approx_mb} MB)..."):
                    pretrained.download_official(name, progress=False)
            except Exception as err:      # noqa: BLE001 -- offline, HTTP errors, corrupt files: all explained
                st.error(f"{name}: {err}")
            else:
                st.rerun()


def _download() -> None:
    """Download official files into the cache (all but d36)."""
    choices = [n for n in pretrained.OFFICIAL_FILES if n != "d36"]
    want = state.bound(st.multiselect, "Download into the cache", "models_download_choice", default=["vae", "d16"],
                       options=choices)
    if st.button("Download", key="models_download", help="Needs internet; resumes where a previous try stopped."):
        for name in want:
            try:
                with st.spinner(f"Downloading {name} (~{pretrained.OFFICIAL_FILES[name].approx_mb} MB)..."):
                    pretrained.download_official(name, progress=False)
                st.success(f"{name}: downloaded and verified.")
            except Exception as err:      # noqa: BLE001 -- offline, HTTP errors, corrupt files: all explained
                st.error(f"{name}: {err}")
                break
        else:
            _forget_official()
            st.rerun()


def _files_you_have() -> None:
    """A VQVAE file and a VAR file named by the user, read from the model folders only."""
    s = state.get()
    folders = ", ".join(f"`{f}`" for f in pretrained.model_folders())
    st.markdown("**Or use files you already have**")
    st.caption(f"Files are read only from the model folders: {folders} (add folders with `VARLITE_MODEL_DIRS`). "
               "A name without a folder is looked up in the cache folder.")
    vae_text = state.bound(st.text_input, "VQVAE file (e.g. vae_ch160v4096z32.pth)", "models_vae_path", default="")
    var_text = state.bound(st.text_input, "VAR file (e.g. var_d16.pth)", "models_var_path", default="")
    if st.button("Load these files", key="models_load_paths"):
        try:
            vae_path, var_path = (pretrained.resolve_model_path(t) for t in (vae_text, var_text))
        except pretrained.NotInModelFolderError as err:
            st.error(str(err))
        else:
            key = f"path:{vae_path}|{var_path}"
            try:
                with st.spinner("Loading and verifying..."):
                    loaders.load_model(key)
            except Exception as err:      # noqa: BLE001 -- missing / corrupt / foreign / unsafe checkpoints
                st.error(f"These files cannot be loaded: {loaders.friendly_error(err)}")
            else:
                if (str(vae_path), str(var_path)) not in s.custom_pairs:
                    s.custom_pairs.append((str(vae_path), str(var_path)))
                s.model_key = key
                st.rerun()


# ------------------------------------------------------------------------------------------------ the page
def main() -> None:
    st.title("Models")
    ui.explain(
        "Every page uses the model picked in the sidebar. Built-in models are small, trained with varlite on a CPU "
        "and shipped with it. The official ImageNet-256 models (VAR-d16 ... d30, 310 M to 2 B parameters) share one "
        "tokenizer (`vae_ch160v4096z32.pth`); once their files are in the cache folder they appear in the picker.",
        "An official checkpoint is loaded strictly: every tensor name and shape must match the official layout, and "
        "files are read with `torch.load(weights_only=True)`, so a corrupt or foreign file is refused with a "
        "message.",
        ("training", "the_real_thing"))
    try:
        model, load_error = ui.load_current_model(), None
    except Exception as err:      # noqa: BLE001 -- this page still renders: it is where a broken file is fixed
        model, load_error = None, err
        ui.show_load_error(state.get().model_key, err)
    if model is not None:
        loaded_model_section(model)
    own_model_section()
    builtin_cards_section()
    official_weights_section(load_error)


main()
