"""Small UI pieces every page uses: the current model, the sampling settings, explanations, safe error display."""
from __future__ import annotations

import streamlit as st

from app import core


def explain(what: str, notice: str, lessons: tuple[str, ...] = ()) -> None:
    """The top of a page: 'what am I looking at' one click away, 'what to notice' always in view."""
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(what)
        st.caption(core.lesson_links(*lessons))
    st.caption(f"**What to notice.** {notice}")


def current_model() -> core.LoadedModel:
    """The model picked in the sidebar, loaded once per server; on failure an explanation and st.stop()."""
    key = st.session_state.get("model_key", core.DEFAULT_MODEL)
    try:
        return core.load_model(key)
    except Exception as err:     # noqa: BLE001 -- every failure becomes a message, never a traceback
        st.error(f"Could not load the model **{key}**.\n\n{core.friendly_error(err)}")
        st.info("Pick another model in the sidebar, or see the **Models** page for how to get the weights.")
        st.stop()


def class_picker(model: core.LoadedModel, key: str, label: str = "Class", default: int = 0) -> int:
    options = list(range(model.num_classes + 1))
    return st.selectbox(label, options, index=min(default, model.num_classes), format_func=model.class_label, key=key,
                        help="What to draw. The last entry is 'unconditional' (the class VAR learned to use when "
                             "the label was dropped in training).")


def sampling_settings(model: core.LoadedModel, prefix: str, *, default_seed: int = 0, default_class: int = 0,
                      compact: bool = False) -> core.GenSettings:
    """Class, seed, cfg, top-k, top-p and smoothing widgets -> GenSettings (keys prefixed, so pages can have two)."""
    V = model.var.config.vocab_size
    cols = st.columns(3 if compact else 6)
    with cols[0]:
        label = class_picker(model, f"{prefix}_class", default=default_class)
    with cols[1]:
        seed = st.number_input("Seed", 0, 2**31 - 1, default_seed, step=1, key=f"{prefix}_seed",
                               help="The only source of randomness: the same seed gives the same image.")
    with cols[2]:
        cfg = st.slider("Guidance (cfg)", 0.0, 8.0, model.default("cfg"), 0.5, key=f"{prefix}_cfg",
                        help="Classifier-free guidance: 0 = off. Its strength ramps up linearly from the first "
                             "scale (no guidance) to the last (full strength).")
    if compact:
        top_k = st.session_state.get("gen_top_k", model.default("top_k"))
        top_p = st.session_state.get("gen_top_p", model.default("top_p"))
        smooth = st.session_state.get("gen_smooth", False)
    else:
        with cols[3]:
            top_k = st.number_input("Top-k", 0, V, model.default("top_k"), step=1, key=f"{prefix}_top_k",
                                    help=f"Sample only among the k most likely tokens (0 = off, max {V}).")
        with cols[4]:
            top_p = st.slider("Top-p", 0.0, 1.0, model.default("top_p"), 0.01, key=f"{prefix}_top_p",
                              help="Sample only from the smallest set of tokens whose probability reaches p (0 = off).")
        with cols[5]:
            smooth = st.toggle("Smoothing", False, key=f"{prefix}_smooth",
                               help="Gumbel smoothing ('more_smooth'): mixes codebook vectors instead of picking one; "
                                    "nicer pictures, not used for FID.")
    return core.GenSettings(model.key, int(label), int(seed), float(cfg), int(top_k), float(top_p), bool(smooth))


def get_trace(settings: core.GenSettings) -> dict | None:
    """The cached trace for these settings; computed with a progress bar the first time; None (with an error shown)
    when the settings are invalid or generation fails."""
    try:
        core.validate(settings)
    except ValueError as err:
        st.error(f"These settings cannot be used: {err}")
        return None
    bar = st.empty()
    progress = bar.progress(0.0, text="starting...")

    def report(frac: float, text: str) -> None:
        progress.progress(min(max(frac, 0.0), 1.0), text=text)

    try:
        trace = core.trace_with_progress(settings, report)
    except Exception as err:      # noqa: BLE001
        bar.empty()
        st.error(f"Generation failed: {core.friendly_error(err)}")
        return None
    bar.empty()
    return trace
