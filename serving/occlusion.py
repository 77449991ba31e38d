"""Occlusion sensitivity over the primary crop: which part of the crop drove the answer.

The crop the backbone saw is cut into a ``grid x grid`` lattice of cells; each cell in turn is
replaced by zeros (after normalisation: the ImageNet mean grey, "no tissue information"), every
occluded crop goes through the same backbone and fusion head as the prediction, and a cell's
importance is how much the logit fell when it was hidden: positive cells pushed the answer
towards positive nodes, negative ones away. It needs nothing but the engines' inputs and
outputs, so it works with every engine a repository serves (ONNX Runtime, OpenVINO, TensorRT).

The Triton model ``aln_explain`` (:class:`aln.serving.triton_models.ExplainModel`) runs the
engines through business-logic scripting; the evidence benchmark runs the same
:func:`occlusion_map` over in-process engines.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.preprocessing.errors import InvalidRequestError

GRID_BOUNDS = (2, 16)
"""Smallest and largest grid side a request may ask for (16 x 16 = 256 backbone runs)."""
DEFAULT_GRID = 8
"""The grid side when a request names none: 32-pixel cells of the 256-pixel crop (4 mm of a
5 cm crop), 64 backbone runs."""
DEFAULT_CHUNK = 32
"""Occluded crops per engine request when none is configured (the served repositories send a
whole backbone batch: :attr:`aln.serving.spec.RepositorySpec.occlusion_chunk`)."""

FloatArray = npt.NDArray[np.float32]
Backbone = Callable[[FloatArray], FloatArray]
"""Crops (N, 3, S, S) -> embeddings (N, D)."""
Head = Callable[[FloatArray], FloatArray]
"""Primary embeddings (N, D) -> logits (N, 1), the other fusion inputs held fixed."""


def check_grid(grid: int | None) -> int:
    """The grid side of a request (the default when None).

    Raises:
        InvalidRequestError: Outside :data:`GRID_BOUNDS`, naming the input and the bounds.
    """
    if grid is None:
        return DEFAULT_GRID
    low, high = GRID_BOUNDS
    if not low <= grid <= high:
        raise InvalidRequestError(
            f"Input '{contract.EXPLAIN_GRID.name}' is {grid}, it must be between {low} and "
            f"{high} (cells per side of the crop)"
        )
    return int(grid)


def cell_edges(grid: int, size: int = contract.IMAGE_SIZE) -> npt.NDArray[np.int64]:
    """The ``grid + 1`` pixel edges of the cells along one side of the crop."""
    edges: npt.NDArray[np.int64] = np.round(np.linspace(0, size, grid + 1)).astype(np.int64)
    return edges


def occluded_crops(image: FloatArray, grid: int) -> FloatArray:
    """Every one-cell occlusion of a normalised crop, row-major: (grid * grid, 3, S, S)."""
    edges = cell_edges(grid, image.shape[-1])
    crops = np.repeat(image[None], grid * grid, axis=0)
    for row in range(grid):
        for col in range(grid):
            cell = crops[row * grid + col]
            cell[:, edges[row] : edges[row + 1], edges[col] : edges[col + 1]] = 0.0
    return crops


def occlusion_map(
    image: FloatArray,
    base_logit: float,
    grid: int,
    backbone: Backbone,
    head: Head,
    chunk: int = DEFAULT_CHUNK,
) -> FloatArray:
    """The importance of each cell: the unoccluded logit minus the logit with the cell hidden.

    Args:
        image: The normalised primary crop (3, S, S), as the backbone saw it.
        base_logit: The prediction's logit (nothing hidden).
        grid: Cells per side (:func:`check_grid`).
        backbone: Runs the primary backbone.
        head: Runs the fusion head for primary embeddings, the study's other inputs fixed.
        chunk: Occluded crops per engine call.

    Returns:
        float32 (grid, grid), in logit units, rows top to bottom of the crop.
    """
    crops = occluded_crops(image, grid)
    logits = []
    for start in range(0, len(crops), chunk):
        embeddings = backbone(crops[start : start + chunk])
        logits.append(np.asarray(head(embeddings), dtype=np.float32).reshape(-1))
    occluded = np.concatenate(logits)
    importance: FloatArray = (np.float32(base_logit) - occluded).reshape(grid, grid)
    return importance.astype(np.float32)


def display_crop(image: FloatArray) -> npt.NDArray[np.uint8]:
    """The normalised crop back to 8-bit grey (S, S) for display (the first channel)."""
    grey = image[0] * contract.IMAGENET_STD[0] + contract.IMAGENET_MEAN[0]
    pixels: npt.NDArray[np.uint8] = np.clip(np.round(grey * 255.0), 0, 255).astype(np.uint8)
    return pixels
