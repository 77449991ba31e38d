"""Diagnostic statistics: AUC with DeLong's variance, operating points, calibration.

DeLong, DeLong & Clarke-Pearson (1988) give the variance of the empirical AUC (the Mann-Whitney
statistic) and the covariance of two AUCs computed on the same cases; the structural components
are computed with the O(n log n) midrank algorithm of Sun & Xu (2014). Confidence intervals are
AUC +- z * SE clipped to [0, 1]; the p-value against AUC = 0.5 is two-sided. Proportions
(sensitivity, specificity, PPV, NPV) get Wilson score intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from aln.preprocessing.decision import RULES

Z95 = float(stats.norm.ppf(0.975))
FloatArray = npt.NDArray[np.float64]


def _check(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError("AUC needs at least one positive and one negative case")
    return y, s


def _midranks(x: FloatArray) -> FloatArray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    i = 0
    while i < x.size:
        j = i
        while j < x.size and sorted_x[j] == sorted_x[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(x.size, dtype=np.float64)
    out[order] = ranks
    return out


def _structural(y: FloatArray, scores: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """AUCs (k,), V10 (k, m) and V01 (k, n) for k score rows (Sun & Xu 2014)."""
    scores = np.atleast_2d(scores)
    positive, negative = scores[:, y == 1], scores[:, y == 0]
    m, n = positive.shape[1], negative.shape[1]
    aucs, v10, v01 = [], [], []
    for pos, neg in zip(positive, negative, strict=True):
        tx, ty = _midranks(pos), _midranks(neg)
        tz = _midranks(np.concatenate([pos, neg]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    return np.array(aucs), np.array(v10), np.array(v01)


def _covariance(v10: FloatArray, v01: FloatArray) -> FloatArray:
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if v10.shape[0] > 1 else np.array([[np.var(v10, ddof=1)]])
    s01 = np.atleast_2d(np.cov(v01)) if v01.shape[0] > 1 else np.array([[np.var(v01, ddof=1)]])
    return s10 / m + s01 / n


@dataclass(frozen=True)
class AucResult:
    """AUC with DeLong's standard error.

    Attributes:
        auc: Empirical AUC (Mann-Whitney).
        se: DeLong standard error.
        ci_low: Lower 95% bound (clipped to 0).
        ci_high: Upper 95% bound (clipped to 1).
        p_value: Two-sided p-value against AUC = 0.5.
        n_positive: Positive cases.
        n_negative: Negative cases.
    """

    auc: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    n_positive: int
    n_negative: int


def delong_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> AucResult:
    """AUC, DeLong SE, 95% CI and p-value against 0.5.

    Raises:
        ValueError: Mismatched lengths, non-binary labels, or a single class.
    """
    y, s = _check(labels, scores)
    aucs, v10, v01 = _structural(y, s)
    se = math.sqrt(max(float(_covariance(v10, v01)[0, 0]), 0.0))
    auc = float(aucs[0])
    p = float(2 * stats.norm.sf(abs(auc - 0.5) / se)) if se > 0 else (0.0 if auc != 0.5 else 1.0)
    return AucResult(
        auc,
        se,
        max(0.0, auc - Z95 * se),
        min(1.0, auc + Z95 * se),
        p,
        int(y.sum()),
        int(y.size - y.sum()),
    )


@dataclass(frozen=True)
class AucComparison:
    """DeLong's test for two correlated AUCs (same cases).

    Attributes:
        auc_a: AUC of the first scores.
        auc_b: AUC of the second scores.
        difference: ``auc_a - auc_b``.
        se: Standard error of the difference.
        z: Test statistic.
        p_value: Two-sided p-value.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float


def delong_test(
    labels: npt.ArrayLike, scores_a: npt.ArrayLike, scores_b: npt.ArrayLike
) -> AucComparison:
    """Compare two models scored on the same cases."""
    y, a = _check(labels, scores_a)
    _, b = _check(labels, scores_b)
    aucs, v10, v01 = _structural(y, np.vstack([a, b]))
    cov = _covariance(v10, v01)
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    difference = float(aucs[0] - aucs[1])
    if variance <= 0:
        return AucComparison(
            float(aucs[0]), float(aucs[1]), difference, 0.0, 0.0, 1.0 if difference == 0 else 0.0
        )
    se = math.sqrt(variance)
    z = difference / se
    return AucComparison(
        float(aucs[0]), float(aucs[1]), difference, se, z, float(2 * stats.norm.sf(abs(z)))
    )


def wilson(successes: int, total: int) -> tuple[float, float, float]:
    """Proportion with its 95% Wilson score interval; NaNs when ``total`` is 0."""
    if total == 0:
        return math.nan, math.nan, math.nan
    p = successes / total
    denominator = 1 + Z95**2 / total
    centre = (p + Z95**2 / (2 * total)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / denominator
    return p, max(0.0, centre - half), min(1.0, centre + half)


def choose_threshold(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    rule: str = "youden",
    target_sensitivity: float = 0.9,
) -> float:
    """An operating threshold chosen on (validation) data.

    Args:
        labels: 0/1.
        scores: Predicted probabilities.
        rule: ``"youden"`` (max sensitivity + specificity - 1) or ``"sensitivity"`` (the highest
            threshold reaching ``target_sensitivity``: a missed positive node is the costly error).
        target_sensitivity: For ``rule="sensitivity"``.
    """
    y, s = _check(labels, scores)
    candidates = np.unique(s)[::-1]
    best, best_value = float(candidates[-1]), -math.inf
    for threshold in candidates:
        predicted = s >= threshold
        sensitivity = (predicted & (y == 1)).sum() / (y == 1).sum()
        specificity = (~predicted & (y == 0)).sum() / (y == 0).sum()
        if rule == "sensitivity":
            if sensitivity >= target_sensitivity:
                return float(threshold)
            continue
        if sensitivity + specificity - 1 > best_value:
            best, best_value = float(threshold), sensitivity + specificity - 1
    if rule not in RULES:
        raise ValueError(
            f"A threshold rule of '{rule}' is invalid, it must be youden or sensitivity"
        )
    return best


def operating_point(
    labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float
) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV (each with a Wilson 95% CI) at ``threshold``."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    predicted = s >= threshold
    tp = int((predicted & (y == 1)).sum())
    fp = int((predicted & (y == 0)).sum())
    tn = int((~predicted & (y == 0)).sum())
    fn = int((~predicted & (y == 1)).sum())
    out: dict[str, Any] = {"threshold": threshold, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name, (k, total) in {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }.items():
        value, low, high = wilson(k, total)
        out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = value, low, high
    return out


def brier(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mean squared error of the probabilities."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return float(np.mean((s - y) ** 2))


def calibration_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike, bins: int = 10
) -> list[dict[str, float]]:
    """Mean predicted vs observed frequency in equal-width probability bins (empty ones omitted)."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    index = np.minimum((s * bins).astype(int), bins - 1)
    curve = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            curve.append(
                {
                    "bin_low": b / bins,
                    "bin_high": (b + 1) / bins,
                    "n": int(mask.sum()),
                    "mean_predicted": float(s[mask].mean()),
                    "observed": float(y[mask].mean()),
                }
            )
    return curve


def expected_calibration_error(
    labels: npt.ArrayLike, scores: npt.ArrayLike, bins: int = 10
) -> float:
    """Mean |observed - predicted| over equal-width probability bins, weighted by bin size."""
    curve = calibration_curve(labels, scores, bins)
    total = sum(b["n"] for b in curve)
    return float(sum(b["n"] * abs(b["observed"] - b["mean_predicted"]) for b in curve) / total)


def logistic_fit(
    x: npt.ArrayLike, labels: npt.ArrayLike, *, intercept: bool = True, iterations: int = 100
) -> tuple[float, float]:
    """``(slope, intercept)`` of P(label) = sigmoid(slope x + intercept) by maximum likelihood.

    Newton's method on the two-parameter log loss (one parameter without ``intercept``), with a
    tiny ridge so separable data stays finite.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    design = np.stack([x, np.ones_like(x)], axis=1) if intercept else x[:, None]
    theta = np.zeros(design.shape[1])  # p = 0.5 everywhere: Newton converges from here
    ridge = 1e-6 * np.eye(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -500, 500)))
        gradient = design.T @ (p - y) + ridge @ theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(theta[0]), float(theta[1]) if intercept else 0.0


def calibration_summary(labels: npt.ArrayLike, scores: npt.ArrayLike) -> dict[str, float]:
    """ECE, Brier score, and the calibration slope and intercept (ideal: 1 and 0).

    The slope and intercept are those of a logistic fit of the labels on the logit of the
    probabilities: below 1, predictions are too extreme; above 1, too timid.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 1e-12, 1 - 1e-12)
    slope, intercept = logistic_fit(np.log(s / (1 - s)), labels)
    return {
        "ece": expected_calibration_error(labels, s),
        "brier": brier(labels, s),
        "slope": slope,
        "intercept": intercept,
    }


def roc_curve(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.where(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (y.size - y.sum())]
    return fpr, tpr
