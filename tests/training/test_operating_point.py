"""The operating point: chosen on validation, stored in the manifest, decided by the fusion head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aln.preprocessing.decision import (
    LIKELY_POSITIVE,
    LOW_RISK,
    UNAVAILABLE,
    Decision,
    OperatingPoint,
    from_parameter,
    parameter_text,
)
from aln.preprocessing.errors import ManifestError
from aln.training.metrics import wilson
from aln.training.operating_point import choose_operating_point

LABELS = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
SCORES = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])


def test_the_sensitivity_rule_keeps_the_target_and_reports_wilson_intervals():
    point = choose_operating_point(LABELS, SCORES, "sensitivity", 0.9)
    # the highest threshold reaching 90% sensitivity takes the positive at 0.35: all five
    assert 0.3 < point.threshold < 0.35
    assert point.sensitivity.value == 1.0 and point.sensitivity.total == 5
    assert (point.specificity.successes, point.specificity.total) == (4, 5)
    assert (point.ppv.successes, point.ppv.total) == (5, 6)
    assert (point.npv.successes, point.npv.total) == (4, 4)
    assert (point.specificity.ci_low, point.specificity.ci_high) == pytest.approx(wilson(4, 5)[1:])
    assert point.prevalence == 0.5 and point.cases == 10 and point.chosen_on == "val"
    assert point.target_sensitivity == 0.9


def test_no_case_sits_on_the_threshold():
    for rule in ("sensitivity", "youden"):
        point = choose_operating_point(LABELS, SCORES, rule, 0.9)
        assert not np.isclose(SCORES, point.threshold, atol=1e-3).any()
        assert point.target_sensitivity == (0.9 if rule == "sensitivity" else None)


def test_a_split_with_one_class_has_no_operating_point():
    with pytest.raises(ValueError, match="needs both classes on the 'val' split"):
        choose_operating_point(np.ones(4), np.linspace(0.1, 0.9, 4), "sensitivity", 0.9)


def test_the_served_parameter_round_trips():
    point = choose_operating_point(LABELS, SCORES, "youden", 0.9)
    assert from_parameter(parameter_text("v7", point), "aln_ensemble") == ("v7", point)
    assert from_parameter(parameter_text("v7", None), "aln_ensemble") == ("v7", None)
    with pytest.raises(ManifestError, match="Parameter 'operating_point' .* not valid JSON"):
        from_parameter("{", "aln_ensemble")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": 1.5}, r"'operating_point.threshold' .* is 1.5, it must be a calibrated"),
        ({"threshold": 0}, r"'operating_point.threshold' .* is 0,"),
        ({"rule": "f1"}, r"'operating_point.rule' .* is 'f1', it must be one of sensitivity"),
        ({"target_sensitivity": None}, r"'operating_point.target_sensitivity' .* is None"),
        ({"cases": 1}, r"'operating_point.cases' .* is 1, it must be an integer of at least 2"),
        ({"prevalence": -0.1}, r"'operating_point.prevalence' .* is -0.1"),
        ({"npv": {"value": 0.9}}, r"'operating_point.npv' .* must be an object with value"),
        (
            {"ppv": {"value": 0.5, "ci_low": 0.6, "ci_high": 0.9, "successes": 1, "total": 2}},
            r"'operating_point.ppv' .* ci_low 0.6, value 0.5, ci_high 0.9",
        ),
        (
            {"sensitivity": {"value": 1, "ci_low": 1, "ci_high": 1, "successes": 3, "total": 2}},
            r"'operating_point.sensitivity.successes' .* is 3, more than its total 2",
        ),
        ({"extra": 1}, r"'operating_point' .* it must be null or an object with rule"),
    ],
)
def test_a_malformed_operating_point_is_refused_naming_the_field(change, message):
    raw = choose_operating_point(LABELS, SCORES, "sensitivity", 0.9).to_dict()
    raw.update(change)
    with pytest.raises(ManifestError, match=message):
        OperatingPoint.from_dict(json.loads(json.dumps(raw)), "manifest.json")


def test_decision_codes():
    assert Decision.from_code(LIKELY_POSITIVE) is Decision.LIKELY_POSITIVE
    assert Decision.from_code(LOW_RISK) is Decision.LOW_RISK
    assert Decision.from_code(UNAVAILABLE) is Decision.UNAVAILABLE
    with pytest.raises(ValueError, match="decision code of 2 is invalid"):
        Decision.from_code(2)


def test_the_fusion_head_decides_at_the_threshold_and_never_without_one():
    import torch

    from aln.model.network import FusionHead

    head = FusionHead(embedding_dim=8, clinical_dim=2, hidden_dim=4).eval()
    inputs = (torch.randn(64, 8), torch.randn(64, 8), torch.ones(64, 1), torch.randn(64, 2))
    with torch.no_grad():
        _, probability, decision = head(*inputs)
        assert decision.dtype == torch.int32 and (decision == UNAVAILABLE).all()
        threshold = float(probability.median())
        head.set_threshold(threshold)
        _, same, decision = head(*inputs)
    assert torch.equal(same, probability)
    expected = np.where(probability.numpy() >= np.float32(threshold), LIKELY_POSITIVE, LOW_RISK)
    np.testing.assert_array_equal(decision.numpy(), expected)
    assert {LIKELY_POSITIVE, LOW_RISK} == set(decision.numpy().reshape(-1).tolist())
    assert "decision_threshold" not in head.state_dict()  # it lives in the manifest
    with pytest.raises(ValueError, match="threshold of 0 is invalid"):
        head.set_threshold(0)
