"""One scale of the Generate page's runs, drawn: the overview strip of every run (sticky at the top of the page), the
scale's heading, and per run its token map, contribution and decoded image beside the attention mask with the picked
token's row.

With one run the token map is clickable (``position_inspector.step_map``); with two it is drawn as a picture (the
panels are too narrow) and the inspector shows it. A streaming model's image (``traces.streams``) is decoded in the
background; a note keeps its place until it is ready.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app import figures, position_inspector, traces
from app.generations import Generations
from app.traces import GenSettings

PANEL_PX = 160           # the clickable token map among the panels (fits their column on a 1000 px wide window)
# the overview strip sticks to the top of the scrolling main area; the panels keep a gap below the scale's heading as
# tall as a hover toolbar (44 px, drawn above a chart), which would cover it (tests/test_browser.py checks)
PAGE_CSS = """<style>
div:has(> .st-key-gen_overview) { position: sticky; top: 3.75rem; z-index: 99; }
.st-key-gen_overview { background: white; padding-bottom: 0.25rem; border-bottom: 1px solid rgba(128, 128, 128, 0.3); }
.st-key-gen_panels { padding-top: 2.5rem; }</style>"""


@dataclass
class StepLayout:
    """Where a scale is drawn, made before anything of it is drawn."""
    strips: list          # per run: the slot of its overview strip (sticky at the top of the page)
    panels: list          # per run: the columns of its token map and its contribution
    decoded: list         # per run: the slot of its decoded image
    mask: object          # the column of the attention mask


def draw_scale(gens: Generations, si: int, pick: tuple[int, int], looking: bool) -> None:
    """Scale si of every run with the position ``pick`` (row, col) framed: the layout first, then the overview
    strips, then the panels. ``looking``: si is the scale asked for (not one the page passes through), so a streaming
    model's image of it is wished for."""
    layout = _lay_out(gens, si)
    _draw_strips(gens, layout.strips, si)
    _draw_panels(gens, layout, si, pick, looking)


def _lay_out(gens: Generations, si: int) -> StepLayout:
    """The overview strips, the scale's heading, and a column per run (token map, contribution, decoded image)
    beside the attention mask's column."""
    step_a = gens.runs[0][2].steps[si]
    with st.container(key="gen_overview"):          # sticky (PAGE_CSS): stays in view while scrolling
        strips = [st.empty() for _ in gens.runs]
    pn, tokens = step_a.pn, step_a.pn * step_a.pn
    st.subheader(f"Scale {si + 1} of {gens.K}: {pn}x{pn} = {tokens} token{'s' if tokens > 1 else ''}, "
                 f"predicted in one step (guidance here t = {step_a.cfg:.2f})")
    cols = st.container(key="gen_panels").columns([3, 1] if len(gens.runs) == 1 else [3, 3, 1])
    panels, decoded = [], []
    for col in cols[:-1]:
        pcols = col.columns(3)
        panels.append(pcols[:2])
        decoded.append(pcols[2].empty())
    return StepLayout(strips, panels, decoded, cols[-1])


def _draw_strips(gens: Generations, strips: list, si: int) -> None:
    """The overview strip of every run (a large model's strip shows the scales decoded so far)."""
    sides = " · ".join(f"{p}x{p}" for p in gens.model.patch_nums)
    for slot, (name, settings, _) in zip(strips, gens.runs):
        slot.image(figures.overview_strip(settings, si), output_format="PNG",
                   caption=gens.caption(name, f"decoded image after every scale ({sides}; scale {si + 1} framed, "
                                              f"later scales faded)"))


def _draw_decoded(gens: Generations, slot, name: str, settings: GenSettings, si: int, pick: tuple[int, int]) -> None:
    cap, img = figures.decoded_panel(settings, si, pick)
    slot.image(img, caption=gens.caption(name, cap), width="stretch", output_format="PNG")


def _draw_panels(gens: Generations, layout: StepLayout, si: int, pick: tuple[int, int], looking: bool) -> None:
    """Scale si's token map and contribution of every run, its decoded image, and the attention mask with the picked
    token's row. A streaming model's image is decoded in the background (``traces.want_image``) when the student is
    ``looking`` at this scale."""
    row, col = pick
    step_a = gens.runs[0][2].steps[si]
    for (name, settings, run), pcols, slot in zip(gens.runs, layout.panels, layout.decoded):
        panels = figures.latent_panels(settings, si, len(run.steps), pick)
        for j, (pcol, (cap, img)) in enumerate(zip(pcols, panels)):
            with pcol:
                if len(gens.runs) == 1 and j == 0:
                    position_inspector.step_map(gens.model, "tokens", step_a, si, row, col, PANEL_PX)
                    st.caption(f"{cap}: click a token to inspect it")
                else:
                    st.image(img, caption=gens.caption(name, cap), width="stretch", output_format="PNG")
        if gens.streaming and si not in run.decoded():
            slot.caption(":material/hourglass_top: decoding the image so far...")
            if looking:
                traces.want_image(run, si, gens.model)
        else:
            _draw_decoded(gens, slot, name, settings, si, pick)
    layout.mask.image(figures.block_mask(gens.model.patch_nums, si, row * step_a.pn + col), width="stretch",
                      output_format="PNG", caption=figures.block_mask_caption(gens.model.patch_nums, si))
