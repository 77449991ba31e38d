"""The evidence benchmark's geometry: cells of the crop mapped back to the lesion disc."""

from __future__ import annotations

import numpy as np
import pytest

from aln.benchmarks.explanation_evidence import inside_and_outside


def test_cells_over_the_lesion_are_inside_and_the_mirror_is_undone():
    importance = np.zeros((4, 4), dtype=np.float32)
    importance[0, 0] = 4.0  # the crop's top-left cell
    box = (1000, 2000, 1400, 2400)  # 400 stored pixels: cells of 100
    lesion_top_left = ((1050.0, 2050.0), 40.0)  # the disc covers the top-left cell's centre only
    inside, outside, cells = inside_and_outside(importance, box, False, *lesion_top_left)
    assert (inside, outside, cells) == (4.0, 0.0, 1)
    # mirrored: the crop's top-left cell came from the box's top-right corner
    inside, outside, cells = inside_and_outside(importance, box, True, *lesion_top_left)
    assert (inside, cells) == (0.0, 1) and outside == pytest.approx(4.0 / 15)
    inside, _, _ = inside_and_outside(importance, box, True, (1350.0, 2050.0), 40.0)
    assert inside == 4.0


def test_a_disc_covering_nothing_or_everything_is_not_compared():
    importance = np.ones((2, 2), dtype=np.float32)
    box = (0, 0, 100, 100)
    assert np.isnan(inside_and_outside(importance, box, False, (500.0, 500.0), 5.0)[0])
    assert np.isnan(inside_and_outside(importance, box, False, (50.0, 50.0), 500.0)[0])
