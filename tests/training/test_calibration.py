"""Calibration: the fit, the calibration metrics, and what a checkpoint carries."""

from __future__ import annotations

import numpy as np
import pytest

from aln.preprocessing.manifest import Calibration
from aln.training.calibration import fit_calibration
from aln.training.metrics import (
    calibration_summary,
    delong_auc,
    expected_calibration_error,
    logistic_fit,
)


def _cohort(slope: float, intercept: float, n: int = 20_000, seed: int = 0):
    """Logits whose true probability is sigmoid(slope x logit + intercept)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(slope * logits + intercept)))).astype(int)
    return logits, labels


def test_platt_recovers_the_true_map_and_temperature_has_no_intercept():
    logits, labels = _cohort(0.5, -0.7)
    platt = fit_calibration(logits, labels, "platt")
    assert platt.slope == pytest.approx(0.5, abs=0.03)
    assert platt.intercept == pytest.approx(-0.7, abs=0.05)
    assert (platt.method, platt.fitted_on, platt.cases) == ("platt", "val", 20_000)
    temperature = fit_calibration(logits, labels, "temperature")
    assert temperature.intercept == 0.0 and temperature.slope > 0


def test_calibration_lowers_ece_and_keeps_the_auc():
    logits, labels = _cohort(0.4, 0.5)
    fitted = fit_calibration(logits[:10_000], labels[:10_000])
    raw = 1 / (1 + np.exp(-logits[10_000:]))
    calibrated = fitted.apply(logits[10_000:])
    held_out = labels[10_000:]
    assert expected_calibration_error(held_out, calibrated) < 0.03  # binning noise at n=10k
    assert expected_calibration_error(held_out, raw) > 0.05
    assert delong_auc(held_out, calibrated).auc == pytest.approx(delong_auc(held_out, raw).auc)
    summary = calibration_summary(held_out, calibrated)
    assert summary["slope"] == pytest.approx(1.0, abs=0.1)
    assert summary["intercept"] == pytest.approx(0.0, abs=0.1)


def test_logistic_fit_of_a_calibrated_score_is_the_identity():
    logits, labels = _cohort(1.0, 0.0)
    slope, intercept = logistic_fit(logits, labels)
    assert slope == pytest.approx(1.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize(
    ("method", "labels", "named"),
    [
        ("isotonic", [0, 1, 0, 1], "method of 'isotonic' is unknown"),
        ("platt", [1, 1, 1, 1], "needs both classes"),
    ],
)
def test_impossible_fits_are_refused_naming_why(method, labels, named):
    with pytest.raises(ValueError, match=named):
        fit_calibration([0.1, 0.2, 0.3, 0.4], labels, method)


def test_a_model_ranking_backwards_cannot_be_calibrated():
    logits, labels = _cohort(-1.0, 0.0, n=2000)
    with pytest.raises(ValueError, match="rank its cases backwards"):
        fit_calibration(logits, labels)


def test_the_fusion_head_serves_the_calibrated_probability_and_the_raw_logit():
    import torch

    from aln.model.network import FusionHead

    head = FusionHead(embedding_dim=8, clinical_dim=2, hidden_dim=4).eval()
    inputs = (torch.randn(5, 8), torch.randn(5, 8), torch.ones(5, 1), torch.randn(5, 2))
    calibration = Calibration("platt", 0.5, -0.3, "val", 10)
    with torch.no_grad():
        logit, identity, _ = head(*inputs)
        head.set_calibration(calibration.slope, calibration.intercept)
        same_logit, probability, _ = head(*inputs)
    assert torch.allclose(identity, torch.sigmoid(logit))
    assert torch.equal(same_logit, logit)
    expected = calibration.apply(logit.numpy())
    np.testing.assert_allclose(probability.numpy(), expected, rtol=1e-6)
    assert "calibration_slope" not in head.state_dict()  # it lives in the manifest
