"""Fit the map from the network's logit to a calibrated probability on the validation split.

Platt scaling (a logistic regression of the labels on the logit: slope and intercept) by default,
temperature scaling (slope only) on request. Both are monotonic with a positive slope, so the
ranking of cases, and with it the AUC, is unchanged; only what the probability means changes. The
result is stored in the checkpoint manifest (:class:`aln.preprocessing.manifest.Calibration`) and
applied by the fusion head, so every exported engine serves the calibrated probability.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from aln.preprocessing.manifest import CALIBRATION_METHODS, Calibration
from aln.training.metrics import logistic_fit


def fit_calibration(
    logits: npt.ArrayLike, labels: npt.ArrayLike, method: str = "platt", split: str = "val"
) -> Calibration:
    """Fit a calibration of raw logits to labels.

    Args:
        logits: The network's raw logits on ``split``.
        labels: 1 or 0 per case.
        method: One of :data:`aln.preprocessing.manifest.CALIBRATION_METHODS`.
        split: The split the cases come from (recorded).

    Raises:
        ValueError: An unknown method, fewer than two cases, a single class, or a fit whose slope
            is not positive (the logits rank the cases backwards: the model is not usable).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"A calibration method of '{method}' is unknown, use one of "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size < 2 or y.min() == y.max():
        raise ValueError(
            f"Calibration needs both classes on the '{split}' split; it has {y.size} cases "
            f"with labels {sorted(set(y.astype(int).tolist()))}"
        )
    slope, intercept = logistic_fit(logits, y, intercept=method == "platt")
    if not slope > 0:
        raise ValueError(
            f"The calibration fitted on '{split}' has slope {slope:.3f}: the logits rank its "
            "cases backwards, so no calibration can make this model's probability meaningful"
        )
    return Calibration(method, slope, intercept, split, int(y.size))
