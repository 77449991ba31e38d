"""Occlusion sensitivity without a server: the crops, the map, the grid bounds."""

from __future__ import annotations

import numpy as np
import pytest

from aln.preprocessing.crop import normalise
from aln.preprocessing.errors import InvalidRequestError
from aln.serving.occlusion import (
    DEFAULT_GRID,
    GRID_BOUNDS,
    cell_edges,
    check_grid,
    display_crop,
    occluded_crops,
    occlusion_map,
)


def test_each_crop_hides_exactly_its_cell():
    image = np.ones((3, 256, 256), dtype=np.float32)
    crops = occluded_crops(image, 4)
    assert crops.shape == (16, 3, 256, 256)
    hidden = crops == 0
    assert hidden[5, :, 64:128, 64:128].all()  # row 1, column 1
    assert hidden.sum(axis=(1, 2, 3)).tolist() == [3 * 64 * 64] * 16
    assert (image == 1).all()  # the original is untouched


def test_the_map_is_the_logit_lost_per_cell_in_row_major_order():
    """A head that reads the mean of one region: only cells over that region matter."""
    image = np.zeros((3, 256, 256), dtype=np.float32)
    image[:, :128, 128:] = 1.0  # the top-right quarter is bright

    def backbone(crops):
        return crops[:, 0].reshape(len(crops), -1).mean(axis=1, keepdims=True)

    def head(embeddings):
        return 8.0 * embeddings

    base = float(head(backbone(image[None]))[0, 0])
    calls = []
    importance = occlusion_map(
        image, base, 4, lambda c: (calls.append(len(c)), backbone(c))[1], head, chunk=5
    )
    assert calls == [5, 5, 5, 1]  # chunks of at most 5 crops
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[:2, 2:] = 8.0 / 16  # each hidden bright cell loses 1/16 of the mean
    np.testing.assert_allclose(importance, expected, atol=1e-6)


@pytest.mark.parametrize("grid", [GRID_BOUNDS[0] - 1, GRID_BOUNDS[1] + 1, 0, -3])
def test_a_grid_outside_the_bounds_is_refused_naming_them(grid):
    with pytest.raises(InvalidRequestError, match=r"'explain_grid' is -?\d+, it must be between"):
        check_grid(grid)


def test_grid_defaults_and_edges():
    assert check_grid(None) == DEFAULT_GRID and check_grid(16) == 16
    assert cell_edges(3).tolist() == [0, 85, 171, 256]


def test_the_display_crop_undoes_the_normalisation():
    grey = np.linspace(0, 1, 256 * 256, dtype=np.float32).reshape(256, 256)
    shown = display_crop(normalise(grey))
    assert shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, np.round(grey * 255).astype(np.uint8))
