"""Training and evaluation on the synthetic cohort with a known answer.

The cohort's labels follow ``aln.synthetic.labels.label_probability``: image terms (lesion
size, margin, density) and clinical terms (tumour size, cN stage, ER/HER2 and regimen). The
clinical record alone carries much of that signal, so even a fusion head trained on ~80 cases over
frozen, randomly initialised backbones ranks held-out cases far better than chance. The bound we
assert: on the pooled held-out cases (test + external, ~90 cases, seeded and deterministic), the
DeLong 95% lower bound of the AUC lies above 0.5 (p < 0.05); the oracle (the true probability) is
about 0.84 on the same cases.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from aln.model.checkpoint import load_checkpoint
from aln.preprocessing import StudyInput, preprocess_study
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.crop import CropSpec, normalise
from aln.training.cohort import read_cohort
from aln.training.dataset import CropCache
from aln.training.errors import CohortError
from aln.training.evaluate import Score, evaluate, read_predictions, score_checkpoint, write_report
from aln.training.metrics import delong_auc, delong_test
from aln.training.trainer import TrainConfig, train
from tests.trained import FAST


def test_cohort_design(cohort):
    rows = list(csv.DictReader((cohort / "manifest.csv").open()))
    assert {r["split"] for r in rows} == {"train", "val", "test", "external"}
    external = {r["centre"] for r in rows if r["split"] == "external"}
    internal = {r["centre"] for r in rows if r["split"] != "external"}
    assert external == {"D"} and internal == {"A", "B", "C"}  # the external centre is a real shift
    assert {r["vendor"] for r in rows if r["centre"] == "D"} == {"fuji"}


def test_held_out_auc_clearly_above_chance(cohort, trained):
    checkpoint, summary = trained
    _, manifest = load_checkpoint(checkpoint)
    assert (
        manifest.training["status"] == "trained"
        and manifest.training["best_epoch"] == summary.best_epoch
        and manifest.auxiliary is False  # FAST trains without the auxiliary branch
    )
    assert (checkpoint / "training_log.csv").is_file() and (
        checkpoint / "training_log.json"
    ).is_file()
    cases = read_cohort(cohort / "manifest.csv")
    scores = score_checkpoint(cases, checkpoint, cohort / ".cache")
    held_out = [s for s in scores if s.split in ("test", "external")]
    result = delong_auc([s.label for s in held_out], [s.score for s in held_out])
    rows = {
        r["file"]: float(r["true_probability"])
        for r in csv.DictReader((cohort / "manifest.csv").open())
    }
    labels = [s.label for s in held_out]
    against_truth = delong_test(
        labels, [s.score for s in held_out], [rows[s.case_id] for s in held_out]
    )
    assert result.ci_low > 0.5 and result.p_value < 0.05, result
    # no model beats the labels' true probabilities on the same cases (a leak would):
    # the paired DeLong test must not find the model significantly better than the oracle
    assert not (against_truth.difference > 0 and against_truth.p_value < 0.05), against_truth


def test_training_is_deterministic(cohort, trained, tmp_path):
    again = train(read_cohort(cohort / "manifest.csv"), FAST, tmp_path / "again", cohort / ".cache")
    assert again.best_val_auc == trained[1].best_val_auc
    assert again.crop_cache_misses == 0  # every crop came from the content-addressed cache


def test_training_crops_are_the_served_crops(cohort):
    case = read_cohort(cohort / "manifest.csv")[0]
    cache = CropCache(cohort / ".cache", CropSpec())
    grey = cache.crop(case.primary, case.region, case.options)
    served = preprocess_study(
        StudyInput(case.primary.read_bytes(), case.region), case.clinical, ClinicalSchema.load()
    )
    np.testing.assert_array_equal(normalise(grey), served.primary_image)


def test_evaluate_report_files_and_keys(cohort, trained, tmp_path):
    cases = read_cohort(cohort / "manifest.csv")
    scores = score_checkpoint(cases, trained[0], cohort / ".cache")
    report = write_report(scores, tmp_path, "test model")
    for split in ("train", "val", "test", "external"):
        entry = report["splits"][split]
        assert (
            entry["auc_ci_low"] <= entry["auc"] <= entry["auc_ci_high"]
            and 0 <= entry["p_value"] <= 1
        )
        assert {"sensitivity", "specificity", "ppv", "npv", "sensitivity_ci_low"} <= set(
            entry["operating_point"]
        )
        assert 0 <= entry["brier"] <= 1 and entry["calibration"]
    assert report["threshold"]["chosen_on"] == "val"
    assert (
        json.loads((tmp_path / "report.json").read_text())["splits"]["test"]["auc"]
        == report["splits"]["test"]["auc"]
    )
    assert "| external |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "roc_calibration.png").stat().st_size > 10_000
    again = evaluate(read_predictions(tmp_path / "predictions.csv"))
    for split, entry in report["splits"].items():
        assert again["splits"][split]["auc"] == pytest.approx(entry["auc"], abs=1e-6)
        assert "uncalibrated" in again["splits"][split]  # the logit column travels too


def test_a_trained_checkpoint_is_calibrated_on_validation_and_keeps_its_ranking(
    cohort, trained, tmp_path
):
    from aln.preprocessing.manifest import read_manifest

    calibration = read_manifest(trained[0]).calibration
    assert calibration is not None and calibration.method == "platt"
    assert calibration.fitted_on == "val" and calibration.slope > 0
    cases = read_cohort(cohort / "manifest.csv")
    report = evaluate(score_checkpoint(cases, trained[0], cohort / ".cache"))
    for split in ("val", "test"):
        entry = report["splits"][split]
        before, after = entry["uncalibrated"], entry["calibration_metrics"]
        assert entry["auc"] == pytest.approx(before["auc"], abs=1e-12)  # monotonic map
        # on the split it was fitted on, the fit is the maximum-likelihood one: slope 1, 0
        if split == "val":
            assert after["slope"] == pytest.approx(1.0, abs=1e-3)
            assert after["intercept"] == pytest.approx(0.0, abs=1e-3)


def test_predictions_file_errors(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("label,score\n1,0.5\n")
    with pytest.raises(ValueError, match="lacks column 'split'"):
        read_predictions(bad)
    bad.write_text("label,score,split\n1,high,test\n")
    with pytest.raises(ValueError, match="line 2"):
        read_predictions(bad)


def test_cohort_errors(cohort, tmp_path):
    rows = (cohort / "manifest.csv").read_text().splitlines()
    broken = tmp_path / "manifest.csv"
    broken.write_text(
        "\n".join(
            [
                rows[0],
                rows[1]
                .replace(",train,", ",training,")
                .replace(",val,", ",training,")
                .replace(",test,", ",training,")
                .replace(",external,", ",training,"),
            ]
        )
    )
    with pytest.raises(CohortError, match="line 2: file"):
        read_cohort(broken)  # the DICOM is not beside this manifest
    with pytest.raises(CohortError, match="lacks column 'label'"):
        (tmp_path / "m2.csv").write_text("file,lesion_x,lesion_y,clinical,split\n")
        read_cohort(tmp_path / "m2.csv")


def test_single_class_split_is_refused(cohort, tmp_path):
    cases = [
        c
        for c in read_cohort(cohort / "manifest.csv")
        if c.split == "train" or (c.split == "val" and c.label == 1)
    ]
    with pytest.raises(ValueError, match="'val' split needs positive and negative cases"):
        train(
            cases,
            TrainConfig(backbone="efficientnet_b0", epochs=1),
            tmp_path / "x",
            cohort / ".cache",
        )
    assert not (tmp_path / "x").exists()


def test_cli_evaluate_predictions(tmp_path):
    rng = np.random.default_rng(0)
    scores = [
        Score(str(i), int(y), float(0.3 * y + rng.random()), split)
        for i, (y, split) in enumerate(
            zip(rng.integers(0, 2, 120), ["val", "test"] * 60, strict=True)
        )
    ]
    from aln.training.evaluate import write_predictions

    write_predictions(scores, tmp_path / "p.csv")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aln",
            "evaluate",
            "--predictions",
            str(tmp_path / "p.csv"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| test |" in result.stdout and (tmp_path / "r" / "report.json").is_file()
