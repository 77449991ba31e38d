"""Score a cohort (in process, through the server, or from a file) and write the paper's report.

All three sources give a list of :class:`Score`; :func:`evaluate` turns it into the same report:
per split AUC with DeLong 95% CI and p-value against 0.5, an operating point chosen on the
validation split (Youden or a target sensitivity) with sensitivity, specificity, PPV and NPV and
their Wilson 95% CIs, Brier score and a calibration curve; written as JSON, a markdown table and
PNG figures (ROC curves with bootstrap 95% bands, calibration).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aln.preprocessing.contract import ImageOptions
from aln.preprocessing.crop import Region
from aln.preprocessing.decision import DEFAULT_RULE, DEFAULT_TARGET_SENSITIVITY
from aln.training.cohort import SPLITS, Case
from aln.training.metrics import (
    brier,
    calibration_curve,
    calibration_summary,
    choose_threshold,
    delong_auc,
    operating_point,
    roc_curve,
)

if TYPE_CHECKING:
    from aln.client import Study


@dataclass(frozen=True)
class Score:
    """One scored case.

    Attributes:
        case_id: Case identifier.
        label: 1 or 0.
        score: Predicted probability (calibrated, when the model has a calibration).
        split: Split name.
        logit: The network's raw logit, when known (in process, served, or a ``logit`` column):
            the report then shows calibration before and after.
    """

    case_id: str
    label: int
    score: float
    split: str
    logit: float | None = None


def score_checkpoint(
    cases: list[Case], checkpoint: Path, cache_dir: Path | None = None
) -> list[Score]:
    """Score in process with the checkpoint's network and the server's preprocessing."""
    import tempfile

    from aln.model.checkpoint import load_checkpoint
    from aln.training.dataset import CropCache
    from aln.training.trainer import predict_outputs, prepare

    net, manifest = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as scratch:
        cache = CropCache(cache_dir or Path(scratch), manifest.crop)
        data = prepare(cases, cache, manifest.schema, manifest.auxiliary, "scoring")
    logits, scores = predict_outputs(net, data)
    return [
        Score(c.case_id, c.label, float(s), c.split, float(z))
        for c, s, z in zip(cases, scores, logits, strict=True)
    ]


def study_of(case: Case, *, auxiliary: bool = False, clinical: bool = True) -> Study:
    """The SDK request of one cohort case (its regions, overrides and clinical record)."""
    from aln.client import ImageInput, Study

    def image(path: Path, region: Region, options: ImageOptions) -> ImageInput:
        return ImageInput(
            path,
            (region.centre_x, region.centre_y),
            region.bbox,
            options.laterality,
            options.view,
            options.spacing_mm,
        )

    aux = None
    if auxiliary and case.auxiliary is not None and case.auxiliary_region is not None:
        aux = image(case.auxiliary, case.auxiliary_region, case.auxiliary_options)
    primary = image(case.primary, case.region, case.options)
    return Study(primary, case.clinical if clinical else {}, aux)


def score_server(
    cases: list[Case],
    url: str,
    *,
    auxiliary: bool = False,
    clinical: bool = True,
    concurrency: int = 4,
) -> list[Score]:
    """Score through the served ensemble (evaluate what you serve)."""
    from aln.client import AlnClient

    studies = [study_of(c, auxiliary=auxiliary, clinical=clinical) for c in cases]
    with AlnClient(url, timeout_s=120) as client:
        predictions = client.predict_many(studies, concurrency=concurrency)
    return [
        Score(c.case_id, c.label, float(p.probability), c.split, float(p.logit))  # type: ignore[union-attr]
        for c, p in zip(cases, predictions, strict=True)
    ]


def read_predictions(path: Path) -> list[Score]:
    """Scores from a CSV: ``label``, ``score``, ``split`` (optional ``case_id`` and ``logit``).

    Raises:
        ValueError: A missing column or an unparsable value, naming the line.
    """
    scores = []
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"label", "score", "split"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks column '{sorted(missing)[0]}'")
        for line, row in enumerate(reader, start=2):
            try:
                scores.append(
                    Score(
                        row.get("case_id") or str(line),
                        int(row["label"]),
                        float(row["score"]),
                        row["split"],
                        float(row["logit"]) if row.get("logit") else None,
                    )
                )
            except ValueError as exc:
                raise ValueError(f"{path} line {line}: {exc}") from exc
    return scores


def write_predictions(scores: list[Score], path: Path) -> None:
    """Write scores in the format :func:`read_predictions` reads."""
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "label", "score", "split", "logit"])
        for s in scores:
            logit = "" if s.logit is None else f"{s.logit:.8f}"
            writer.writerow([s.case_id, s.label, f"{s.score:.8f}", s.split, logit])


def evaluate(
    scores: list[Score],
    rule: str = DEFAULT_RULE,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> dict[str, Any]:
    """The report: per split AUC (DeLong), operating point from the validation split, calibration.

    Args:
        scores: Scored cases.
        rule: Threshold rule on the validation split: ``sensitivity`` (default: the highest
            threshold with at least ``target_sensitivity``; a missed positive node is the costly
            error) or ``youden``.
        target_sensitivity: For ``rule="sensitivity"``.
    """
    by_split: dict[str, list[Score]] = {}
    for s in scores:
        by_split.setdefault(s.split, []).append(s)
    threshold_split = "val" if "val" in by_split else next(iter(by_split))
    reference = by_split[threshold_split]
    threshold = choose_threshold(
        [s.label for s in reference], [s.score for s in reference], rule, target_sensitivity
    )
    report: dict[str, Any] = {
        "threshold": {
            "value": threshold,
            "rule": rule,
            "chosen_on": threshold_split,
            "target_sensitivity": target_sensitivity if rule == "sensitivity" else None,
        },
        "splits": {},
    }
    order = [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS))
    for split in order:
        labels = np.array([s.label for s in by_split[split]])
        values = np.array([s.score for s in by_split[split]])
        entry: dict[str, Any] = {"n": int(labels.size), "n_positive": int(labels.sum())}
        if 0 < labels.sum() < labels.size:
            auc = delong_auc(labels, values)
            entry.update(
                {
                    "auc": auc.auc,
                    "auc_se": auc.se,
                    "auc_ci_low": auc.ci_low,
                    "auc_ci_high": auc.ci_high,
                    "p_value": auc.p_value,
                }
            )
        else:
            entry.update({"auc": None, "note": "AUC needs both classes"})
        entry["operating_point"] = operating_point(labels, values, threshold)
        entry["brier"] = brier(labels, values)
        entry["calibration"] = calibration_curve(labels, values)
        entry["calibration_metrics"] = calibration_summary(labels, values)
        logits = [s.logit for s in by_split[split]]
        if all(z is not None for z in logits):
            raw = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
            entry["uncalibrated"] = {
                "auc": delong_auc(labels, raw).auc if 0 < labels.sum() < labels.size else None,
                **calibration_summary(labels, raw),
                "curve": calibration_curve(labels, raw),
            }
        report["splits"][split] = entry
    return report


def markdown_table(report: dict[str, Any], title: str = "Model") -> str:
    """A table shaped like the paper's: AUC (95% CI), p, sensitivity, specificity, PPV, NPV."""

    def ci(entry: dict[str, Any], key: str) -> str:
        value = entry.get(key)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "n/a"
        return f"{value:.3f} ({entry[f'{key}_ci_low']:.3f}–{entry[f'{key}_ci_high']:.3f})"

    lines = [
        f"### {title}",
        "",
        f"Threshold {report['threshold']['value']:.3f} ({report['threshold']['rule']}, "
        f"chosen on {report['threshold']['chosen_on']})",
        "",
        "| split | n (pos) | AUC (95% CI) | p | sensitivity | specificity | PPV | NPV | Brier | ECE"
        " (before calibration) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split, entry in report["splits"].items():
        point = entry["operating_point"]
        p = entry.get("p_value")
        lines.append(
            f"| {split} | {entry['n']} ({entry['n_positive']}) | {ci(entry, 'auc')} | "
            f"{'n/a' if p is None else ('<0.001' if p < 0.001 else f'{p:.3f}')} | "
            f"{ci(point, 'sensitivity')} | {ci(point, 'specificity')} | {ci(point, 'ppv')} | "
            f"{ci(point, 'npv')} | {entry['brier']:.3f} | "
            f"{entry['calibration_metrics']['ece']:.3f}"
            + (f" ({entry['uncalibrated']['ece']:.3f})" if "uncalibrated" in entry else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_report(
    scores: list[Score], report: dict[str, Any], out: Path, bootstraps: int = 200, seed: int = 0
) -> list[Path]:
    """ROC curves with bootstrap 95% bands and calibration curves, per split (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, 101)
    fig, (roc_ax, cal_ax) = plt.subplots(1, 2, figsize=(11, 5))
    for split, entry in report["splits"].items():
        if entry.get("auc") is None:
            continue
        labels = np.array([s.label for s in scores if s.split == split])
        values = np.array([s.score for s in scores if s.split == split])
        fpr, tpr = roc_curve(labels, values)
        pos, neg = np.where(labels == 1)[0], np.where(labels == 0)[0]
        bands = []
        for _ in range(bootstraps):
            idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
            bf, bt = roc_curve(labels[idx], values[idx])
            bands.append(np.interp(grid, bf, bt))
        low, high = np.percentile(bands, [2.5, 97.5], axis=0)
        line = roc_ax.plot(
            fpr,
            tpr,
            label=f"{split}: AUC {entry['auc']:.3f} "
            f"({entry['auc_ci_low']:.3f}–{entry['auc_ci_high']:.3f})",
        )[0]
        roc_ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.15)
        curve = entry["calibration"]
        cal_ax.plot(
            [c["mean_predicted"] for c in curve],
            [c["observed"] for c in curve],
            "o-",
            color=line.get_color(),
            label=f"{split}: ECE {entry['calibration_metrics']['ece']:.3f}",
        )
        raw = entry.get("uncalibrated")
        if raw is not None:  # the same split before calibration, dashed
            cal_ax.plot(
                [c["mean_predicted"] for c in raw["curve"]],
                [c["observed"] for c in raw["curve"]],
                "x--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{split} before calibration: ECE {raw['ece']:.3f}",
            )
    roc_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (95% bootstrap band)")
    roc_ax.legend(loc="lower right", fontsize=8)
    cal_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    cal_ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration")
    cal_ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = out / "roc_calibration.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def write_report(
    scores: list[Score], out: Path, title: str = "Model", **kwargs: Any
) -> dict[str, Any]:
    """Evaluate and write ``report.json``, ``report.md``, ``predictions.csv`` and the figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluate(scores, **kwargs)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_table(report, title))
    write_predictions(scores, out / "predictions.csv")
    plot_report(scores, report, out)
    return report
