"""Models: what is loaded, where its weights came from, your own model (a training run or uploaded weights), and how
to get the official ones. Every section is a function called by ``main`` with what it needs; the session's
settings come from ``state.get()``.

Managing the model folders (deleting a damaged file, downloading official files of up to 8 GB, seeing where the
folders are on the server) is for whoever runs the server (``may_manage_files``): on a server that others reach (a
class server: ``--server.address`` other than this machine's loopback, as ``make serve`` starts it) it is off,
unless the server was started with a teacher token (``VARLITE_TEACHER_TOKEN``), which the teacher enters once per
browser session. With a token set, it is needed on every server. Paths are shown relative to their model folder.
"""
from __future__ import annotations

import dataclasses
import hmac
import os
import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from app import loaders, official_files, registry, state, training_runs, ui, uploads
from app.loaders import LoadedModel
from varlite import builtin, pretrained
from varlite.download import varlite_home


CARD_IMAGE_MAX_PX = 720
TEACHER_TOKEN_ENV = "VARLITE_TEACHER_TOKEN"
TEACHER_KEY = "teacher_session"             # st.session_state: True once this session entered the token
LOOPBACK = ("localhost", "127.0.0.1", "::1")


# ------------------------------------------------------------------------------------------------ who manages files
def class_server() -> bool:
    """Whether other machines reach this server: it was started with ``--server.address`` naming an address other
    than this machine's loopback (``make serve`` gives 0.0.0.0)."""
    address = str(st.get_option("server.address") or "")
    return address != "" and address not in LOOPBACK


def may_manage_files() -> bool:
    """Whether this session may delete and download files of the model folders and see where they are: with a
    teacher token set, once the session entered it; without one, unless this is a class server."""
    if os.environ.get(TEACHER_TOKEN_ENV):
        return st.session_state.get(TEACHER_KEY) is True
    return not class_server()


def teacher_sign_in() -> None:
    """With a teacher token set and not entered yet in this session: a small form to enter it."""
    token = os.environ.get(TEACHER_TOKEN_ENV, "")
    if not token or st.session_state.get(TEACHER_KEY) is True:
        return
    with st.expander("Teacher: manage the model folders"):
        typed = st.text_input("Teacher token (set when the server was started)", key="models_teacher_token",
                              type="password")
        if st.button("Enter", key="models_teacher_enter"):
            if hmac.compare_digest(typed.encode(), token.encode()):
                st.session_state[TEACHER_KEY] = True
                st.rerun()
            time.sleep(1)                   # a wrong token costs a second: no fast guessing
            st.error("That is not the teacher token.")


def folders_text() -> str:
    """The model folders as this session may see them: their paths for whoever manages them, else a phrase."""
    if not may_manage_files():
        return "the server's model folders"
    try:
        return "the model folders " + ", ".join(f"`{f}`" for f in pretrained.model_folders())
    except OSError as err:
        return f"the model folders (unusable: {err})"


# ------------------------------------------------------------------------------------------------ the loaded model
def show_model_card(card: str, folder) -> None:
    """A model card in markdown; its image lines (``![alt](file.png)``, files beside the card) become st.image at
    their own width (at most CARD_IMAGE_MAX_PX), since the browser cannot fetch files relative to the card. An
    image that resolves outside the card's folder (a symbolic link leading elsewhere) is not shown."""
    text = []
    for line in card.splitlines():
        image = re.fullmatch(r"!\[(.*)\]\(([^)/]+)\)", line.strip())
        if image:
            st.markdown("\n".join(text))
            path = Path(folder) / image.group(2)
            if path.resolve().is_relative_to(Path(folder).resolve()) and path.is_file():
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
        st.caption(f"file: {uploads.literal(f)}")
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
        runs = training_runs.training_runs()
    except OSError:
        runs = []
    st.caption(f"Runs are read only from {folders_text()}. Train into one (`--run-dir $VARLITE_HOME/runs/mine`) or "
               "add your runs folder to `VARLITE_MODEL_DIRS`. Paths are shown relative to their model folder.")
    if runs:
        found = state.bound(st.selectbox, "Training runs found in the model folders", "models_run_found",
                            options=[str(r) for r in runs], format_func=training_runs.shown_path)
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
            st.error(loaders.without_server_paths(str(err)))
        else:
            _adopt_own(f"run:{run_path}", f"Your run: {run_path.name if run_path.is_dir() else run_path.parent.name}")


def _upload_tab() -> None:
    limit = uploads.weights_upload_limit_mb()
    st.markdown(uploads.limit_text(limit))
    st.caption("Files are read without running code (`torch.load(weights_only=True)`, or safetensors) and checked "
               "strictly before anything is built: every tensor name, shape and dtype must match the model they "
               f"describe, and every value must be finite. The server keeps the last {uploads.MAX_UPLOADS} uploads.")
    types = ["safetensors", "pt", "pth"]
    too_big = f"Larger than {limit} MB? Export the weights alone: {uploads.EXPORT_COMMAND}"
    up_var = st.file_uploader(f"The model: a weights export `.safetensors`, a train-var `checkpoint.pt`, or a VAR "
                              f"state_dict `.pth` (up to {limit} MB)", key="models_upload_var", type=types,
                              max_upload_size=limit, help=too_big)
    up_vae = st.file_uploader(f"Its VQVAE state_dict `.pth` (only needed with a VAR state_dict; up to {limit} MB)",
                              key="models_upload_vae", type=["pt", "pth"], max_upload_size=limit, help=too_big)
    if st.button("Load the uploaded files", key="models_load_upload", disabled=up_var is None):
        try:
            store = uploads.upload_store()
            var_sha = store.put(up_var.getvalue(), up_var.name)
            vae_sha = store.put(up_vae.getvalue(), up_vae.name) if up_vae is not None else ""
        except uploads.UploadedFileError as err:
            st.error(str(err))
        else:
            _adopt_own(f"upload:{var_sha}" + (f"|{vae_sha}" if vae_sha else ""),
                       f"Uploaded: {uploads.model_name(up_var.name)}")


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
    download, and files the user already has. ``load_error``: why the picked model failed to load, if it did.
    Deleting and downloading are for whoever manages the files (``may_manage_files``)."""
    st.subheader("Official weights")
    try:
        home = varlite_home()
    except OSError as err:
        st.error(f"The cache folder cannot be used: {loaders.without_server_paths(str(err))}")
        st.stop()
    manage = may_manage_files()
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
    where = f"Cache folder: `{home}` (set `VARLITE_HOME` to change it). " if manage else ""
    st.markdown(f"{where}From a terminal on the server: `python -m varlite download vae d16`. Each VAR file needs "
                "the `vae` file too.")
    for name, problem in problems.items():
        _damaged_file(name, loaders.without_server_paths(problem), manage)
    teacher_sign_in()
    a, b = st.columns([2, 3])
    with a:
        if manage:
            _download()
        else:
            st.info("Downloading and deleting files of the model folders is for the teacher: on the server, run "
                    "`python -m varlite download d16`, or start the server with a teacher token "
                    f"(`{TEACHER_TOKEN_ENV}`) and enter it here.")
    with b:
        _files_you_have()


def _damaged_file(name: str, problem: str, manage: bool) -> None:
    """A damaged official file: what is wrong, and (for whoever manages the files) buttons to delete it or
    download it again."""
    path = pretrained.official_path(name)
    with st.container(border=True):
        st.error(f"**{name}**: `{training_runs.shown_path(path)}` cannot be used: {problem}")
        if not manage:
            return
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
                st.error(f"{name}: {loaders.without_server_paths(str(err))}")
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
                st.error(f"{name}: {loaders.without_server_paths(str(err))}")
                break
        else:
            _forget_official()
            st.rerun()


def _files_you_have() -> None:
    """A VQVAE file and a VAR file named by the user, read from the model folders only."""
    s = state.get()
    st.markdown("**Or use files you already have**")
    st.caption(f"Files are read only from {folders_text()} (add folders with `VARLITE_MODEL_DIRS`). A name "
               "without a folder is looked up in the cache folder.")
    vae_text = state.bound(st.text_input, "VQVAE file (e.g. vae_ch160v4096z32.pth)", "models_vae_path", default="")
    var_text = state.bound(st.text_input, "VAR file (e.g. var_d16.pth)", "models_var_path", default="")
    if st.button("Load these files", key="models_load_paths"):
        try:
            vae_path, var_path = (pretrained.resolve_model_path(t) for t in (vae_text, var_text))
        except pretrained.NotInModelFolderError as err:
            st.error(loaders.without_server_paths(str(err)))
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
