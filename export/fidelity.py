"""The fidelity gate of reduced-precision engines: held-out crops, the fp32 engines as reference.

Before an int8 or bf16 export is written, its engines and the fp32 ONNX Runtime engines score the
same held-out studies (crops made by the served preprocessing, never the calibration ones:
:func:`aln.export.calibration.calibration_set`) through the whole chain, backbones then fusion
head, as the ensemble serves it. The gate measures

* the cosine of each backbone's embedding against fp32, on every held-out crop;
* the probability's largest and mean absolute difference;
* on labelled studies (the test split of a cohort, or every synthetic study), the AUC of each
  engine and their Spearman rank correlation.

and refuses the export when a bound is missed, naming the bound, the value and the studies that
broke it. A probability bound means something only on a trained model: demo random weights put
every probability near 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.export.calibration import SYNTHETIC, TEST_SPLITS, HeldOutStudy
from aln.model.errors import ModelError
from aln.preprocessing import contract
from aln.serving.engine import Engine

PROBABILITY_MAX_ABS = 0.02
"""Largest absolute probability difference from fp32 on any held-out study."""
PROBABILITY_MEAN_ABS = 0.005
"""Mean absolute probability difference from fp32 over the held-out studies."""
AUC_DIFFERENCE = 0.005
"""Largest AUC difference from fp32 on the labelled held-out studies."""
WORST_SHOWN = 5
"""Studies named when a probability bound is missed."""
_BATCH = 16


class FidelityError(ModelError):
    """A reduced-precision engine that misses a fidelity bound (nothing is written).

    Attributes:
        report: What the gate measured (:class:`FidelityReport`).
    """

    def __init__(self, message: str, report: FidelityReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class FidelityReport:
    """What the gate measured (``export_report.json``'s ``fidelity``).

    Attributes:
        studies: Held-out studies scored.
        crops: Held-out crops (primary and auxiliary) through the backbones.
        embedding_cosine_min: Per backbone, the smallest cosine against fp32.
        embedding_cosine_mean: Per backbone, the mean cosine.
        probability_max_abs_diff: Largest absolute probability difference.
        probability_mean_abs_diff: Mean absolute probability difference.
        auc_studies: Labelled studies the AUCs are computed on (0: none, AUC not compared).
        auc_reference: AUC of the fp32 engines, or None.
        auc_candidate: AUC of the reduced-precision engines, or None.
        auc_difference: ``|auc_candidate - auc_reference|``, or None.
        spearman: Rank correlation of the two engines' probabilities over every held-out study.
        probability_range: The fp32 probabilities' smallest and largest value (a model whose
            probabilities all sit near 0.5 makes the probability bounds weak; this says so).
        worst: The studies with the largest probability difference (name, fp32, candidate).
        bounds: The bounds applied.
        failures: One sentence per missed bound (empty: passed).
    """

    studies: int
    crops: int
    embedding_cosine_min: dict[str, float]
    embedding_cosine_mean: dict[str, float]
    probability_max_abs_diff: float
    probability_mean_abs_diff: float
    auc_studies: int
    auc_reference: float | None
    auc_candidate: float | None
    auc_difference: float | None
    spearman: float
    probability_range: tuple[float, float]
    worst: list[dict[str, Any]]
    bounds: dict[str, float]
    failures: list[str]

    @property
    def passed(self) -> bool:
        """Every bound met."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``passed``."""
        return {**asdict(self), "passed": self.passed}


def _embed(engine: Engine, crops: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    name = contract.BACKBONE_INPUT.name
    parts = [
        engine.run({name: crops[i : i + _BATCH]})[contract.BACKBONE_OUTPUT.name]
        for i in range(0, len(crops), _BATCH)
    ]
    return np.concatenate(parts).astype(np.float32)


def cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Row-wise cosine of two embedding batches (0 where a row is all zeros)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    similarity: npt.NDArray[np.float64] = (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
    return similarity


def score_studies(
    engines: Mapping[str, Engine], studies: Sequence[HeldOutStudy], auxiliary: bool
) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.float64]]:
    """Run the held-out studies through the chain as the ensemble serves it.

    Args:
        engines: ``backbone_primary``, ``backbone_auxiliary`` and ``fusion_head`` engines.
        studies: The held-out studies.
        auxiliary: Whether the model has an auxiliary branch (else the auxiliary is absent).

    Returns:
        The embeddings per backbone (auxiliary: only studies with an auxiliary crop) and the
        probability per study.
    """
    primary = _embed(engines[contract.BACKBONE_PRIMARY], np.stack([s.primary for s in studies]))
    with_aux = [i for i, s in enumerate(studies) if s.auxiliary is not None]
    aux_crops = (
        np.stack([s.auxiliary for s in studies if s.auxiliary is not None]) if with_aux else None
    )
    aux_embeddings = (
        _embed(engines[contract.BACKBONE_AUXILIARY], aux_crops)
        if aux_crops is not None
        else np.zeros((0, primary.shape[1]), np.float32)
    )
    auxiliary_rows = np.zeros_like(primary)
    present = np.zeros((len(studies), 1), np.float32)
    if auxiliary and with_aux:
        auxiliary_rows[with_aux] = aux_embeddings
        present[with_aux] = 1.0
    fusion = engines[contract.FUSION_HEAD].run(
        {
            contract.PRIMARY_EMBEDDING.name: primary,
            contract.AUXILIARY_EMBEDDING.name: auxiliary_rows,
            contract.AUXILIARY_PRESENT.name: present,
            contract.CLINICAL_VECTOR.name: np.stack([s.clinical for s in studies]),
        }
    )
    probability = fusion[contract.ALN_PROBABILITY.name].reshape(-1).astype(np.float64)
    return (
        {contract.BACKBONE_PRIMARY: primary, contract.BACKBONE_AUXILIARY: aux_embeddings},
        probability,
    )


def check_fidelity(
    reference: Mapping[str, Engine],
    candidate: Mapping[str, Engine],
    studies: Sequence[HeldOutStudy],
    auxiliary: bool,
) -> FidelityReport:
    """Score the held-out studies with both engine sets and apply the bounds.

    Args:
        reference: The fp32 ONNX Runtime engines per model.
        candidate: The reduced-precision engines per model.
        studies: Held-out studies (never the calibration ones).
        auxiliary: Whether the model has an auxiliary branch.
    """
    from scipy import stats

    from aln.training.metrics import delong_auc

    ref_embeddings, ref_probability = score_studies(reference, studies, auxiliary)
    cand_embeddings, cand_probability = score_studies(candidate, studies, auxiliary)
    cosine_min, cosine_mean = {}, {}
    for model, ref in ref_embeddings.items():
        if len(ref):
            rows = cosine(ref, cand_embeddings[model])
            cosine_min[model] = round(float(rows.min()), 6)
            cosine_mean[model] = round(float(rows.mean()), 6)
    diff = np.abs(cand_probability - ref_probability)
    order = np.argsort(-diff)[:WORST_SHOWN]
    worst = [
        {
            "study": studies[i].name,
            "fp32": round(float(ref_probability[i]), 5),
            "candidate": round(float(cand_probability[i]), 5),
        }
        for i in order
    ]
    labelled = [i for i, s in enumerate(studies) if s.label is not None]
    tested = [i for i in labelled if studies[i].split in TEST_SPLITS] or [
        i for i in labelled if studies[i].split == SYNTHETIC
    ]
    labels = [int(studies[i].label or 0) for i in tested]
    auc_ref = auc_cand = auc_diff = None
    if len(set(labels)) == 2:
        auc_ref = round(delong_auc(labels, ref_probability[tested]).auc, 5)
        auc_cand = round(delong_auc(labels, cand_probability[tested]).auc, 5)
        auc_diff = round(abs(auc_cand - auc_ref), 5)
    spearman = float(stats.spearmanr(ref_probability, cand_probability).statistic)
    failures = []
    max_diff, mean_diff = float(diff.max()), float(diff.mean())
    shown = ", ".join(f"{w['study']} ({w['fp32']} -> {w['candidate']})" for w in worst[:3])
    if max_diff > PROBABILITY_MAX_ABS:
        failures.append(
            f"probability max abs difference {max_diff:.4f} > {PROBABILITY_MAX_ABS} "
            f"(worst: {shown})"
        )
    if mean_diff > PROBABILITY_MEAN_ABS:
        failures.append(
            f"probability mean abs difference {mean_diff:.4f} > {PROBABILITY_MEAN_ABS} "
            f"(worst: {shown})"
        )
    if auc_diff is not None and auc_diff > AUC_DIFFERENCE:
        failures.append(
            f"AUC difference {auc_diff:.4f} > {AUC_DIFFERENCE} on {len(tested)} labelled studies "
            f"(fp32 {auc_ref}, candidate {auc_cand})"
        )
    return FidelityReport(
        studies=len(studies),
        crops=len(studies) + len(ref_embeddings[contract.BACKBONE_AUXILIARY]),
        embedding_cosine_min=cosine_min,
        embedding_cosine_mean=cosine_mean,
        probability_max_abs_diff=round(max_diff, 6),
        probability_mean_abs_diff=round(mean_diff, 6),
        auc_studies=len(tested) if auc_diff is not None else 0,
        auc_reference=auc_ref,
        auc_candidate=auc_cand,
        auc_difference=auc_diff,
        spearman=round(spearman, 6),
        probability_range=(
            round(float(ref_probability.min()), 5),
            round(float(ref_probability.max()), 5),
        ),
        worst=worst,
        bounds={
            "probability_max_abs_diff": PROBABILITY_MAX_ABS,
            "probability_mean_abs_diff": PROBABILITY_MEAN_ABS,
            "auc_difference": AUC_DIFFERENCE,
        },
        failures=failures,
    )
