"""DeLong and friends checked against independent computations."""

import numpy as np
import pytest
from scipy import stats

from aln.training.metrics import (
    brier,
    calibration_curve,
    choose_threshold,
    delong_auc,
    delong_test,
    operating_point,
    roc_curve,
    wilson,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(int)
    a = y * 0.8 + rng.normal(0, 1, 300)
    b = y * 0.4 + 0.5 * a + rng.normal(0, 1, 300)
    return y, a, b


def test_auc_equals_mann_whitney(data):
    y, a, _ = data
    u = stats.mannwhitneyu(a[y == 1], a[y == 0]).statistic
    assert delong_auc(y, a).auc == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))


def test_ties_count_half():
    assert delong_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]).auc == pytest.approx(0.875)


def test_delong_se_matches_a_large_bootstrap(data):
    y, a, _ = data
    result = delong_auc(y, a)
    rng = np.random.default_rng(1)
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    boot = []
    for _ in range(3000):  # stratified bootstrap, as DeLong conditions on the class sizes
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        boot.append(delong_auc(y[idx], a[idx]).auc)
    assert result.se == pytest.approx(np.std(boot), rel=0.1)
    assert result.ci_low < result.auc < result.ci_high
    assert result.p_value < 1e-6


def test_p_value_near_one_for_a_useless_score():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    result = delong_auc(y, rng.random(400))
    assert result.p_value > 0.01 and result.ci_low < 0.5 < result.ci_high


def test_two_correlated_aucs(data):
    y, a, b = data
    same = delong_test(y, a, a)
    assert same.difference == 0 and same.p_value == 1.0
    comparison = delong_test(y, a, b)
    assert comparison.auc_a == pytest.approx(delong_auc(y, a).auc)
    rng = np.random.default_rng(2)
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    diffs = []
    for _ in range(2000):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        diffs.append(delong_auc(y[idx], a[idx]).auc - delong_auc(y[idx], b[idx]).auc)
    assert comparison.se == pytest.approx(np.std(diffs), rel=0.12)


def test_input_errors():
    with pytest.raises(ValueError, match="one positive and one negative"):
        delong_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        delong_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="0 or 1"):
        delong_auc([0, 2], [0.1, 0.2])


def test_wilson_interval_known_value():
    # 8/10: Wilson 95% interval (0.490, 0.943)
    p, low, high = wilson(8, 10)
    assert (p, round(low, 3), round(high, 3)) == (0.8, 0.49, 0.943)


def test_thresholds_and_operating_point():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.35, 0.4, 0.6, 0.8, 0.7, 0.3])
    threshold = choose_threshold(y, s, "sensitivity", 1.0)
    assert threshold == 0.3  # the highest threshold that still catches every positive
    point = operating_point(y, s, threshold)
    assert point["sensitivity"] == 1.0 and point["fn"] == 0 and point["specificity"] == 0.5
    assert 0 < choose_threshold(y, s) <= 0.8


def test_brier_calibration_and_roc():
    y = np.array([0, 1, 1, 0])
    s = np.array([0.1, 0.9, 0.6, 0.4])
    assert brier(y, s) == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    curve = calibration_curve(y, s, bins=2)
    assert [c["n"] for c in curve] == [2, 2] and curve[1]["observed"] == 1.0
    fpr, tpr = roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapz(tpr, fpr) == pytest.approx(delong_auc(y, s).auc)
