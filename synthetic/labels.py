"""The synthetic cohort's answer key: a documented label model and plausible clinical records.

Labels follow a logistic model of lesion diameter, spiculation, lesion contrast and clinical
features (:func:`label_probability`), so models trained on the cohort can learn and the AUC of a
perfect model is known.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def label_probability(
    diameter_mm: float, spiculated: bool, density: float, clinical: dict[str, Any]
) -> float:
    """P(nodes positive after NAT) of the synthetic cohort: a documented logistic model.

    logit = -1.2 + 0.08 (diameter_mm - 20) + 1.0 spiculated + 6 (density - 0.35)
            + 0.9 [cN2 or cN3] + 0.7 [ER positive and HER2 0/1+]
            - 0.8 [HER2 3+ with anti-HER2 dual blockade]

    Image terms (size, margin, density: the lesion's contrast over the parenchyma) and clinical
    terms both matter, so neither branch alone reaches the oracle AUC. The label is a Bernoulli
    draw from this probability, which the manifest records as ``true_probability``: the AUC of
    that column is what a perfect model scores on the same cases.
    """
    logit = -1.2 + 0.08 * (diameter_mm - 20.0) + (1.0 if spiculated else 0.0)
    logit += 6.0 * (density - 0.35)
    logit += 0.9 if clinical["cn_stage"] in ("N2", "N3") else 0.0
    logit += (
        0.7
        if clinical["er_status"] == "positive" and clinical["her2_status"] in ("0", "1+")
        else 0.0
    )
    logit -= (
        0.8
        if clinical["her2_status"] == "3+" and clinical["nat_regimen"] == "anti_her2_dual"
        else 0.0
    )
    return 1.0 / (1.0 + math.exp(-logit))


def random_clinical(rng: np.random.Generator, diameter_mm: float) -> dict[str, Any]:
    """A plausible clinical record (schema v1) for a lesion of ``diameter_mm``."""
    her2 = str(rng.choice(["0", "1+", "2+", "3+"], p=[0.35, 0.25, 0.15, 0.25]))
    er = str(rng.choice(["positive", "negative"], p=[0.65, 0.35]))
    pr = "positive" if er == "positive" and rng.random() < 0.8 else "negative"
    if her2 == "3+":
        subtype = "her2_enriched" if er == "negative" else "luminal_b"
    elif er == "negative":
        subtype = "triple_negative"
    else:
        subtype = str(rng.choice(["luminal_a", "luminal_b"]))
    regimen = (
        "anti_her2_dual"
        if her2 == "3+"
        else str(
            rng.choice(["anthracycline_taxane", "taxane_platinum", "other"], p=[0.7, 0.2, 0.1])
        )
    )
    age = float(np.clip(rng.normal(50, 10), 25, 85))
    ct = "T1" if diameter_mm <= 20 else "T2" if diameter_mm <= 50 else "T3"
    return {
        "age_years": round(age, 1),
        "tumour_size_mm": round(float(diameter_mm), 1),
        "ki67_percent": round(float(np.clip(rng.normal(35, 20), 1, 95)), 1),
        "menopausal_status": "post" if age > 51 else "pre",
        "ct_stage": ct,
        "cn_stage": str(rng.choice(["N1", "N2", "N3"], p=[0.6, 0.3, 0.1])),
        "histological_grade": str(rng.choice(["G1", "G2", "G3"], p=[0.1, 0.5, 0.4])),
        "er_status": er,
        "pr_status": pr,
        "her2_status": her2,
        "molecular_subtype": subtype,
        "nat_regimen": regimen,
    }
