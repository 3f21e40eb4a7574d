"""Linked, clickable views and paint-to-edit (issue 12 sections 1 and 2), driven headless by AppTest.

A click on an Altair map reaches the script as that chart's selection in ``st.session_state`` under the chart's key;
the tests put the same value there (what the browser sends: tests/test_browser_linked.py clicks for real)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")

from app import edits, figures, loaders, traces  # noqa: E402
from app.traces import GenSettings  # noqa: E402
from tests.test_app import SHAPES, assert_clean, heading_scale, new_app, settings  # noqa: E402
from varlite import editing  # noqa: E402


def click(at, key: str, row: int, col: int):
    """What the browser sends when a cell of the chart ``key`` is clicked."""
    at.session_state[key] = {"selection": {figures.PICK: [{"row": row, "col": col}], figures.BRUSH: {}}}
    return at.run()


def drag(at, key: str, rows: list[int], cols: list[int]):
    """What the browser sends when a box is dragged over ``rows`` x ``cols`` of the chart ``key``."""
    at.session_state[key] = {"selection": {figures.PICK: [], figures.BRUSH: {"row": rows, "col": cols}}}
    return at.run()


def position_text(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("Position"))


# ------------------------------------------------------------------------------------------------ the pieces
def test_picked_cells_reads_clicks_and_boxes_and_drops_cells_outside_the_grid():
    assert figures.picked_cells(None, 4) == set()
    assert figures.picked_cells({"selection": {"pick": [], "brush": {}}}, 4) == set()
    assert figures.picked_cells({"selection": {"pick": [{"row": 1, "col": 2}, {"row": 9, "col": 0}]}}, 4) == {(1, 2)}
    assert figures.picked_cells({"selection": {"brush": {"row": [0, 1], "col": [2, 3]}}}, 4) == {
        (0, 2), (0, 3), (1, 2), (1, 3)}


def test_a_clickable_map_has_one_rect_per_cell_a_tooltip_and_both_selections():
    chart = figures.token_chart(np.arange(9).reshape(3, 3), np.random.default_rng(0).random((9, 3)), {(1, 2)},
                                np.full((3, 3), 0.5), np.ones((3, 3)), brush=True)
    spec = chart.spec
    assert {p["name"]: p["select"]["type"] for p in spec["params"]} == {"pick": "point", "brush": "interval"}
    assert [t["field"] for t in spec["encoding"]["tooltip"]] == ["row", "col", "token", "probability", "entropy"]
    assert len(chart.data) == 9
    assert [(r.row, r.col) for r in chart.data.itertuples() if r.marked] == [(1, 2)]   # the picked cell is outlined
    assert (chart.data.iloc[-1]["row"], chart.data.iloc[-1]["col"]) == (1, 2)          # ... and drawn last, on top
    assert spec["encoding"]["stroke"]["condition"] == {"test": "datum.marked", "value": "black"}
    assert figures.step_chart("entropy", np.zeros((2, 2), int), np.ones((2, 2)), np.zeros((2, 2)), 256,
                              set()).spec["encoding"]["color"]["scale"]["domain"] == [0, float(np.log(256))]


def test_mark_cell_frames_the_pixels_of_the_cell_on_any_picture():
    rgb = np.full((192, 192, 3), 100, np.uint8)
    framed = figures.mark_cell(rgb, 3, 1, 2)                    # rows 64..127, columns 128..191
    assert (framed[64, 128:192] == 0).all() and (framed[127, 128:192] == 0).all()
    assert (framed[64:128, 128] == 0).all() and (framed[64:128, 191] == 0).all()
    assert (framed[:64] == 100).all() and (framed[:, :128] == 100).all()
    odd = figures.mark_cell(np.zeros((32, 32, 3), np.uint8), 3, 2, 0)     # 32 / 3: rounded to rows 21..31
    assert (odd[21, 0:11] == 0).all() and (odd[:21] == 0).all() and odd[22:31, 1:10].max() > 0


def test_the_attention_mask_marks_the_picked_tokens_row():
    from PIL import Image
    import io
    patch_nums = (1, 2, 3)
    plain = np.asarray(Image.open(io.BytesIO(figures.block_mask(patch_nums, 2, px=14))))
    marked = np.asarray(Image.open(io.BytesIO(figures.block_mask(patch_nums, 2, query=4, px=14))))
    assert marked.shape[1] == plain.shape[1] + 16                  # blue ticks in both margins
    row = 1 + 4 + 4                                                # scale 3 starts at token 5; its 5th token
    assert (marked[row, 8:8 + 14] == (20, 90, 220)).all()          # it sees all 14 tokens
    assert (marked[row, :8] == (20, 90, 220)).all() and (marked[row - 1, :8] == 255).all()


# ------------------------------------------------------------------------------------------------ Generate
def test_a_click_on_any_map_picks_the_position_and_the_area_follows_the_scales():
    at = new_app()
    at.button(key="gen_next").click().run()                    # scale 2 (2x2): the centre point is token (1, 1)
    assert "Position **(1, 1)**" in position_text(at)
    click(at, "gen_pick_probability_1_1_1", 0, 1)               # a click on the probability map
    assert_clean(at)
    assert "Position **(0, 1)**" in position_text(at)
    assert any(e.label == "Inspect the picked position (0, 1) of this scale (A)" for e in at.expander)
    step = traces.finished_generation(GenSettings(SHAPES, 0, 0, 1.5, 20, 0.0)).steps[1]
    assert f"chosen token **{int(step.tokens[0, 0, 1])}**" in position_text(at)
    at.button(key="gen_next").click().run()                    # 3x3: the centre of cell (0, 1) of 2x2 is in (0, 2)
    assert heading_scale(at)[0] == 3 and "Position **(0, 2)**" in position_text(at)
    click(at, "gen_pick_entropy_2_0_2", 2, 0)                   # a click on the entropy map
    assert "Position **(2, 0)**" in position_text(at)
    click(at, "gen_pick_tokens_2_2_0", 1, 1)                    # and on the token map
    assert "Position **(1, 1)**" in position_text(at)
    assert (settings(at).pick_y, settings(at).pick_x) == (0.5, 0.5)
    at.button(key="gen_next").click().run()                    # 4x4: the point (0.5, 0.5) is in cell (2, 2)
    assert "Position **(2, 2)**" in position_text(at)
    assert_clean(at)


def test_the_picked_token_is_framed_on_the_panels_and_the_strip_stays_plain():
    model = loaders.load_model(SHAPES)
    gen = GenSettings(SHAPES, 0, 0, model.default("cfg"), model.default("top_k"), model.default("top_p"))
    K = len(traces.finished_generation(gen).steps)
    plain = figures.latent_panels(gen, 2, K) + [figures.decoded_panel(gen, 2)]
    framed = figures.latent_panels(gen, 2, K, (0, 2)) + [figures.decoded_panel(gen, 2, (0, 2))]
    assert [c for c, _ in plain] == [c for c, _ in framed]
    assert all(a != b for (_, a), (_, b) in zip(plain, framed))


def test_a_small_model_keeps_its_scale_when_the_settings_change():
    """Only a streaming (large) model goes back to scale 1 on new settings (tests/test_app.py, the d16 test)."""
    at = new_app()
    at.button(key="gen_next").click().run()
    at.button(key="gen_next").click().run()
    at.number_input(key="gen_seed").set_value(3).run()
    assert_clean(at)
    assert heading_scale(at)[0] == 3 and settings(at).seed == 3


# ------------------------------------------------------------------------------------------------ Encode
def encode_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Picked position"))


def test_a_click_on_the_encode_token_map_picks_the_position_and_the_area_follows_the_scales():
    from app import inputs
    at = new_app("views/encode.py")
    sample = settings(at).view["enc_sample"]
    steps = traces.encode_trace(SHAPES, inputs.sample_image_png(sample, 32), sample).steps
    at.slider(key="enc_scale").set_value(2).run()              # scale 2 (2x2): the centre point is token (1, 1)
    assert encode_caption(at).startswith(f"Picked position **(1, 1)**: token **{int(steps[1].tokens[0, 1, 1])}**")
    click(at, "enc_pick_1_1_1", 0, 1)
    assert_clean(at)
    assert encode_caption(at).startswith(f"Picked position **(0, 1)**: token **{int(steps[1].tokens[0, 0, 1])}**")
    assert (settings(at).pick_y, settings(at).pick_x) == (0.25, 0.75)
    at.slider(key="enc_scale").set_value(3).run()              # 3x3: the centre of cell (0, 1) of 2x2 is in (0, 2)
    assert encode_caption(at).startswith(f"Picked position **(0, 2)**: token **{int(steps[2].tokens[0, 0, 2])}**")
    click(at, "enc_pick_2_0_2", 2, 0)                           # a click on scale 3's map
    assert encode_caption(at).startswith("Picked position **(2, 0)**")
    assert [e.key for e in at.get("vega_lite_chart") if e.key] == ["enc_pick_2_2_0"]    # redrawn at the new pick
    at.switch_page("views/generate.py").run()                  # the picked point is shared with Generate
    at.button(key="gen_next").click().run()
    at.button(key="gen_next").click().run()                    # 3x3 there too: the same cell
    assert "Position **(2, 0)**" in position_text(at)
    assert_clean(at)


# ------------------------------------------------------------------------------------------------ Edit
def test_the_default_edit_adds_a_blue_triangle_and_keeps_the_disc():
    """The page opens on an edit that works on the built-in model: class editing of the lower half as 'blue
    triangle'; the red disc above it is kept (issue 12 section 2)."""
    at = new_app("views/edit.py")
    assert_clean(at)
    assert at.radio(key="edit_op").value == "class"
    assert at.selectbox(key=f"edit_class_label@{SHAPES}").value == 2
    model = loaders.load_model(SHAPES)
    gen = GenSettings(SHAPES, 0, 0, model.default("cfg"), model.default("top_k"), model.default("top_p"))
    res = edits.edit_result(edits.EditRequest(SHAPES, "class", (0.5, 0.0, 1.0, 1.0), 2, 0, model.default("cfg"),
                                              model.default("top_k"), model.default("top_p"), source_settings=gen))
    half = res.before.shape[0] // 2
    assert np.abs(res.after[:half].astype(float) - res.before[:half]).mean() < 8     # the disc's half: kept
    red = lambda a: ((a[..., 0] > 150) & (a[..., 1] < 100)).sum()                      # noqa: E731
    blue = lambda a: ((a[..., 2] > 150) & (a[..., 0] < 120)).sum()                     # noqa: E731
    assert red(res.after[:half]) >= 0.7 * red(res.before[:half]) and red(res.before[:half]) > 40
    assert blue(res.after[half:]) > 20 and blue(res.before) == 0
    assert all(k[k.shape[0] // 2:].sum() == 0 for k in res.keep[1:])     # the lower half generated at every scale
    assert any("the 2x2 mask above turns all orange" in m.value for m in at.markdown)   # why a centred box fails


def test_painting_switches_cells_and_drags_boxes_and_the_scale_masks_follow():
    at = new_app("views/edit.py")
    H = loaders.load_model(SHAPES).patch_nums[-1]
    view = settings(at).view
    click(at, "edit_paint_0", 0, 0)                     # a click adds a cell to the preset (the lower half)
    assert (0, 0) in view["edit_cells"][1] and len(view["edit_cells"][1]) == H * H // 2 + 1
    click(at, "edit_paint_1", 7, 7)                     # a click on a painted cell removes it
    assert (7, 7) not in view["edit_cells"][1]
    at.toggle(key="edit_erase").set_value(True).run()
    drag(at, "edit_paint_2", list(range(H // 2, H)), list(range(H)))      # the eraser box removes the lower half
    assert view["edit_cells"][1] == {(0, 0)}
    assert_clean(at)
    at.toggle(key="edit_erase").set_value(False).run()
    drag(at, "edit_paint_3", [4, 5, 6, 7], [0, 1, 2, 3])                 # a box adds the lower left quarter
    cells = view["edit_cells"][1]
    assert cells == {(0, 0)} | {(r, c) for r in range(4, 8) for c in range(4)}
    region = edits.region_mask(cells, H)
    expected = editing.scale_keep_masks(torch.from_numpy(~region), loaders.load_model(SHAPES).patch_nums)
    assert [c for img in at.image for c in img.captions].count("2x2") == 2      # the live masks and the result's
    res = edits.edit_result(edits.EditRequest(SHAPES, "class", frozenset(cells), 1, 0, 1.5, settings(at).top_k,
                                              settings(at).top_p, source_settings=GenSettings(SHAPES, 0, 0, 1.5, 20)))
    assert all(np.array_equal(k, e[0].numpy()) for k, e in zip(res.keep, expected))
    at.slider(key="edit_cols").set_value((0.0, 0.5)).run()              # the preset replaces the painted region
    assert view.get("edit_cells") is None
    at.button(key="edit_clear").click().run()
    assert "The region is empty" in at.warning[0].value


def test_token_surgery_picks_tokens_by_click_and_a_replacement_from_the_candidates_or_the_codebook():
    at = new_app("views/edit.py")
    at.radio(key="edit_op").set_value("surgery").run()
    assert_clean(at)
    si = at.selectbox(key="edit_surgery_scale").value
    view = settings(at).view
    assert view["edit_surgery_cells"] == (si, {(0, 0), (0, 1), (1, 0), (1, 1)})
    click(at, f"edit_surgery_{si}_0", 3, 3)                              # add a token
    click(at, f"edit_surgery_{si}_1", 0, 1)                              # remove one
    cells = view["edit_surgery_cells"][1]
    assert cells == {(0, 0), (1, 0), (1, 1), (3, 3)}
    model = loaders.load_model(SHAPES)
    source = GenSettings(SHAPES, 0, 0, model.default("cfg"), model.default("top_k"), model.default("top_p"))
    pred = edits.scale_prediction(SHAPES, edits.EditSource(source), si, 0, model.default("cfg"), model.default("top_k"),
                                  model.default("top_p"), 0)
    candidates = at.radio(key=f"edit_cand_{si}_(0, 0)")
    assert candidates.options[0].startswith(f"{int(pred.candidates[0, 0, 0])} (")
    token = int(pred.candidates[0, 0, 2])
    candidates.set_value(token).run()
    assert_clean(at)
    res = edits.edit_result(edits.EditRequest(SHAPES, "surgery", frozenset(cells), 0, 0, model.default("cfg"),
                                              model.default("top_k"), model.default("top_p"), si, token, source))
    before = traces.finished_generation(source).steps
    assert all(np.array_equal(res.tokens[i], before[i].tokens[0].numpy()) for i in range(si))
    assert all(res.tokens[si][c] == token for c in cells)
    assert any(f"become token **{token}**" in c.value for c in at.caption)
    at.radio(key="edit_surgery_from").set_value("codebook").run()
    at.selectbox(key="edit_codebook_token").set_value(17).run()
    assert_clean(at)
    assert any("become token **17**" in c.value for c in at.caption)


def test_a_click_that_also_leaves_a_one_cell_box_is_a_click():
    """In the browser a click on the paint grid sends the clicked cell and a one-cell box (the interval selection
    starts on the same press): it switches the cell, it does not add it."""
    at = new_app("views/edit.py")
    at.session_state["edit_paint_0"] = {"selection": {figures.PICK: [{"row": 7, "col": 0}],
                                                      figures.BRUSH: {"row": [7], "col": [0]}}}
    at.run()
    assert (7, 0) not in settings(at).view["edit_cells"][1]       # it was in the preset (the lower half)
    assert_clean(at)
