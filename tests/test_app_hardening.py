"""What a visitor of the class server could tip over, and must not: crafted selections, crafted or broken weights,
large images, links out of the model folders, file names with markdown, the teacher's file management, leftover
upload folders, and the limits and defaults the pages state."""
from __future__ import annotations

import time
import tracemalloc

import pytest

pytest.importorskip("streamlit")

from app import figures  # noqa: E402


# ------------------------------------------------------------------------------------------------ crafted selections
def test_a_huge_crafted_brush_costs_no_more_than_the_grid():
    """A 30 KB message naming a 3000 x 3000 box: rows and columns off the grid are dropped before pairing."""
    event = {"selection": {figures.BRUSH: {"row": list(range(-1500, 1500)), "col": list(range(3000))}}}
    tracemalloc.start()
    start = time.process_time()
    cells = figures.picked_cells(event, 16)
    seconds = time.process_time() - start
    peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert cells == {(r, c) for r in range(16) for c in range(16)}
    assert seconds < 0.2 and peak_bytes < 2**20, (seconds, peak_bytes)


def test_crafted_selection_values_are_dropped_not_raised():
    junk_points = [{"row": "1", "col": 1}, {"row": True, "col": 0}, {"row": 1.5, "col": 0}, {"row": None}, 7, "x",
                   {"row": 2.0, "col": 3}]
    assert figures.picked_cells({"selection": {figures.PICK: junk_points}}, 4) == {(2, 3)}
    for event in ("junk", {"selection": "x"}, {"selection": {figures.PICK: {"row": 1}}},
                  {"selection": {figures.BRUSH: {"row": 3, "col": [1]}}},
                  {"selection": {figures.BRUSH: {"row": [[1]], "col": [1]}}}):
        assert figures.picked_cells(event, 4) == set(), event
