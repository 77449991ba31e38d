"""Choose the served operating point on the validation split, after calibration.

The threshold is chosen on the calibrated validation probabilities by the same rule ``aln
evaluate`` uses (:func:`aln.training.metrics.choose_threshold`), and stored in the manifest with
the figures it had there (:class:`aln.preprocessing.decision.OperatingPoint`); the exported fusion
head decides with it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from aln.preprocessing.decision import FIGURES, OperatingPoint, Proportion
from aln.training.metrics import choose_threshold, operating_point

_COUNTS = {
    "sensitivity": ("tp", "fn"),
    "specificity": ("tn", "fp"),
    "ppv": ("tp", "fp"),
    "npv": ("tn", "fn"),
}
"""Per figure: the successes and the other count of its denominator."""


def _between(probabilities: npt.NDArray[np.float64], chosen: float) -> float:
    """The threshold half-way below ``chosen`` (a case's probability) to the next lower case.

    Every case on the split is decided as at ``chosen``, but no case sits on the threshold, so an
    engine that computes a probability a few ulps away from torch's decides the same.
    """
    lower = probabilities[probabilities < chosen]
    return float((chosen + (lower.max() if lower.size else 0.0)) / 2)


def choose_operating_point(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    rule: str,
    target_sensitivity: float,
    split: str = "val",
) -> OperatingPoint:
    """The operating point of calibrated probabilities on one split.

    The threshold is the rule's choice (a case's probability) moved half-way down to the next
    lower case: the same decisions on this split, with no case on the edge.

    Args:
        labels: 1 or 0 per case.
        probabilities: Calibrated probabilities (the served ones).
        rule: ``sensitivity`` or ``youden`` (:data:`aln.preprocessing.decision.RULES`).
        target_sensitivity: For ``rule="sensitivity"``.
        split: The split the cases come from (recorded).

    Raises:
        ValueError: An unknown rule, or a split without both classes.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size < 2 or y.min() == y.max():
        raise ValueError(
            f"An operating point needs both classes on the '{split}' split; it has {y.size} "
            "cases of one class"
        )
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    threshold = _between(p, choose_threshold(y, p, rule, target_sensitivity))
    point = operating_point(y, p, threshold)
    figures = {}
    for name in FIGURES:
        successes, other = _COUNTS[name]
        total = point[successes] + point[other]
        if total == 0:
            figures[name] = Proportion(None, None, None, 0, 0)
        else:
            figures[name] = Proportion(
                point[name],
                point[f"{name}_ci_low"],
                point[f"{name}_ci_high"],
                point[successes],
                total,
            )
    return OperatingPoint(
        rule=rule,
        target_sensitivity=target_sensitivity if rule == "sensitivity" else None,
        threshold=float(threshold),
        chosen_on=split,
        cases=int(y.size),
        prevalence=float(y.mean()),
        **figures,
    )
