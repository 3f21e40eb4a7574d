"""Small UI pieces every page uses: the model picker, the current model, the sampling controls, explanations."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import links, loaders, registry, state
from app.loaders import LoadedModel
from app.traces import GenSettings

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"


def lesson_links(*keywords: str) -> str:
    """Markdown pointing at the lessons whose file names contain a keyword (or at the folder)."""
    found = [f"`lessons/{nb.name}`" for nb in sorted(LESSONS_DIR.glob("*.ipynb"))
             if any(k.lower() in nb.stem.lower() for k in keywords)] if LESSONS_DIR.is_dir() else []
    where = " (open them with `jupyter lab lessons/`)"
    return ("Lessons: " + ", ".join(found) + where) if found else "Lessons: the notebooks in `lessons/`" + where


def explain(what: str, notice: str, lessons: tuple[str, ...] = ()) -> None:
    """The top of a page: 'what am I looking at' one click away, 'what to notice' always in view."""
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(what)
        st.caption(lesson_links(*lessons))
    st.caption(f"**What to notice.** {notice}")


def model_picker() -> None:
    """Sidebar: which model every page uses. A session's first run takes the model and the settings of its link
    (app/links.py: ``?model=<key>&seed=...``); a key that is not offered (e.g. official files deleted) falls back to
    the default, with a note."""
    s = state.get()
    choices = registry.available_models(s.custom_pairs)
    keys = [c.key for c in choices]
    labels = {c.key: c.label for c in choices}
    default = registry.DEFAULT_MODEL if registry.DEFAULT_MODEL in keys else keys[0]
    link_notes = []
    if not s.linked:
        linked_key, link_notes = links.requested_model(keys, labels[default])
        s.model_key = s.model_key or linked_key or default
    if s.model_key not in keys:
        s.model_key = default
    with st.sidebar:
        state.bound(st.selectbox, "Model", "model_picker", field="model_key", options=keys, format_func=labels.get,
                    help="Built-in models are small and shipped with varlite. Official models appear here once "
                         "their weights are in the cache (see the Models page).")
        try:
            model = load_current_model()  # adopt it now, so the notes below are about this model
            link_notes += [] if s.linked else links.restore(model)
        except Exception:                 # noqa: BLE001 -- the page explains the failure (and the Models page fixes it)
            pass
        if not s.linked:
            s.notes, s.linked = s.notes + link_notes, True
        for note in s.notes:
            st.info(note, icon=":material/tune:")
        st.caption("VAR (Tian et al., NeurIPS 2024) generates an image coarse-to-fine: one whole token map per "
                   "step, 1x1 first, each conditioned on all coarser ones.")


def load_current_model() -> LoadedModel:
    """The model picked in the sidebar, loaded (once per server) and adopted by the settings; raises on failure."""
    model = loaders.load_model(state.get().model_key)
    state.adopt_model(model)
    return model


def current_model() -> LoadedModel:
    """``load_current_model()``; on failure an explanation, a pointer to the Models page, and ``st.stop()``."""
    try:
        return load_current_model()
    except Exception as err:     # noqa: BLE001 -- every failure becomes a message, never a traceback
        show_load_error(state.get().model_key, err)
        st.info("Pick another model in the sidebar. The **Models** page names the files and can delete or "
                "download them again.")
        st.stop()


def show_load_error(key: str, err: BaseException) -> None:
    st.error(f"Could not load the model **{key}**.\n\n{loaders.friendly_error(err)}")


def class_picker(model: LoadedModel, key: str, field: str | None = None, label: str = "Class",
                 options: list[int] | None = None, default: int = 0) -> int:
    """A class selectbox ('3: cat'; the last entry is 'unconditional'), bound to ``settings.<field>``. The widget
    key carries the model, so a new model starts with its own options and names at once."""
    options = list(range(model.num_classes + 1)) if options is None else options
    return state.bound(st.selectbox, label, f"{key}@{model.key}", field=field, default=default, options=options,
                       format_func=model.class_label,
                       help="What to draw. The last entry is 'unconditional' (the class VAR learned to use when "
                            "the label was dropped in training).")


def sampling_controls(model: LoadedModel, b: bool = False) -> GenSettings:
    """Class, seed and cfg (and, for setting A, top-k, top-p, smoothing and "Reset to recommended"), bound to the
    session's settings; each help names the model's recommended value."""
    sfx = "_b" if b else ""
    rec = state.recommended(model)
    cols = st.columns(3 if b else 6)
    with cols[0]:
        class_picker(model, f"gen_class{sfx}", field=f"label{sfx}")
    with cols[1]:
        state.bound(st.number_input, "Seed", f"gen_seed{sfx}", field=f"seed{sfx}", min_value=0, max_value=state.SEED_MAX,
                    step=1, help="The only source of randomness: the same seed gives the same image.")
    with cols[2]:
        state.bound(st.slider, "Guidance (cfg)", f"gen_cfg{sfx}", field=f"cfg{sfx}", min_value=state.CFG_RANGE[0],
                    max_value=state.CFG_RANGE[1], step=0.5, help=f"Classifier-free guidance: 0 = off. Its strength ramps up linearly from the first "
                                   f"scale (no guidance) to the last (full strength). Recommended for {model.name}: "
                                   f"{rec['cfg']:g}.")
    if not b:
        V = model.vocab_size
        with cols[3]:
            state.bound(st.number_input, "Top-k", "gen_top_k", field="top_k", min_value=0, max_value=V, step=1,
                        help=f"Sample only among the k most likely tokens (0 = off, max {V}). Recommended for "
                             f"{model.name}: {rec['top_k']}.")
        with cols[4]:
            state.bound(st.slider, "Top-p", "gen_top_p", field="top_p", min_value=0.0, max_value=1.0, step=0.01,
                        help=f"Sample only from the smallest set of tokens whose probability reaches p (0 = off). "
                             f"Recommended for {model.name}: {rec['top_p']:g}.")
        with cols[5]:
            state.bound(st.toggle, "Smoothing", "gen_smooth", field="smooth",
                        help="Gumbel smoothing ('more_smooth'): mixes codebook vectors instead of picking one; "
                             "nicer pictures, not used for FID.")
        _recommended_row(model, rec)
    return generation_settings(model, b)


def _recommended_row(model: LoadedModel, rec: dict) -> None:
    """The model's recommended sampling settings in words, and a button that sets them (cfg of A and B)."""
    s = state.get()
    current = {name: getattr(s, name) for name in state.SAMPLING_FIELDS}
    with st.container(horizontal=True, gap="small", vertical_alignment="center"):
        st.button("Reset to recommended", icon=":material/restart_alt:", key="gen_recommended",
                  on_click=state.use_recommended, args=(model,), disabled=current == rec and s.cfg_b == rec["cfg"],
                  help=f"Set cfg, top-k and top-p to what {model.name} recommends.")
        st.caption(f"Recommended for {model.name}: {state.sampling_words(rec)}"
                   f"{' (in use)' if current == rec else ''}.")


def generation_settings(model: LoadedModel, b: bool = False) -> GenSettings:
    """The cache key of setting A (or B) from the session's settings."""
    s = state.get().sampling(b)
    return GenSettings(model.key, int(s["label"]), int(s["seed"]), float(s["cfg"]), int(s["top_k"]),
                       float(s["top_p"]), bool(s["smooth"]))


def settings_caption(model: LoadedModel, settings: GenSettings) -> str:
    """'class 3: cat, seed 0, cfg 1.5, top-k 20, top-p 0 (off), no smoothing' -- which settings a table used."""
    return (f"{model.class_label(settings.label)}, seed {settings.seed}, cfg {settings.cfg:g}, "
            f"top-k {settings.top_k}{' (off)' if settings.top_k == 0 else ''}, "
            f"top-p {settings.top_p:g}{' (off)' if settings.top_p == 0 else ''}, "
            f"{'smoothing' if settings.smooth else 'no smoothing'}")


def drawn_or_explained(view, model: LoadedModel) -> None:
    """Draw a page's body, ``view(model)``; a failure anywhere in it is explained in an error box, never shown as a
    traceback (which would carry server paths)."""
    try:
        view(model)
    except Exception as err:      # noqa: BLE001 -- a failure anywhere on the page is explained, never a traceback
        st.error(f"This page could not be drawn: {loaders.friendly_error(err)}")
