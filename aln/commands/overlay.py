"""The picture ``aln predict --explain`` writes: the crop with its occlusion map over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_overlay(explanation: Any, path: Path) -> Path:
    """Draw an :class:`aln.client.Explanation` and save it as PNG.

    The crop is shown as the backbone saw it, with the map upsampled to whole cells over it in a
    diverging colour scale centred on 0 (red: the cell pushed the answer towards positive nodes;
    blue: away), the colour bar in logit units, and the probability and decision in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prediction = explanation.prediction
    crop = explanation.crop
    importance = explanation.importance
    size = crop.shape[0]
    limit = float(np.abs(importance).max()) or 1.0
    fig, ax = plt.subplots(figsize=(6, 6.6))
    ax.imshow(crop, cmap="gray", vmin=0, vmax=255)
    shown = ax.imshow(
        _cells(importance, size),
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        alpha=0.45,
        interpolation="nearest",
    )
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="logit lost when hidden")
    x0, y0, x1, y1 = explanation.crop_box
    primary = prediction.provenance.get("primary") or {}
    mirrored = " (mirrored)" if primary.get("flipped") else ""
    ax.set_title(
        f"P(nodes positive) = {prediction.probability:.3f}; decision: "
        f"{prediction.decision.value.replace('_', ' ')}\n"
        f"crop{mirrored} of stored pixels ({x0}, {y0})-({x1}, {y1}); "
        f"{prediction.model_name} {prediction.model_version}",
        fontsize=9,
    )
    ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cells(importance: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, Any]:
    """The map at crop resolution, each cell a flat block (the cells of the occlusion grid)."""
    from aln.serving.occlusion import cell_edges

    edges = cell_edges(importance.shape[0], size)
    index = np.searchsorted(edges, np.arange(size), side="right") - 1
    return importance[np.ix_(index, index)]
