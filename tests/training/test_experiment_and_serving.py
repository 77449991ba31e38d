"""The experiment grid, and evaluating what you serve: the served ensemble gives the same AUC."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from aln.client import AlnClient
from aln.export.repository import build_repository
from aln.preprocessing import contract
from aln.preprocessing.decision import Decision
from aln.preprocessing.manifest import read_manifest
from aln.serving.server import EmbeddedServer, ServerConfig
from aln.training.cohort import read_cohort
from aln.training.evaluate import evaluate, score_checkpoint, score_server, study_of
from aln.training.experiment import grid, run_grid
from tests.trained import FAST


def test_grid_writes_a_paper_like_comparison(cohort, tmp_path):
    configs = grid(
        replace(FAST, epochs=1),
        ["fixed_mm", "lesion_bbox"],
        ["efficientnet_b0"],
        [False],
        [False],
    )
    assert len(configs) == 2
    comparison = run_grid(
        read_cohort(cohort / "manifest.csv"), configs, tmp_path, cohort / ".cache"
    )
    assert comparison["best"] in comparison["configurations"]
    best = comparison["configurations"][comparison["best"]]
    assert best["delong_vs_best"]["test"] == 1.0  # the best compared with itself
    table = (tmp_path / "comparison.md").read_text()
    assert "efficientnet_b0/lesion_bbox/clinical-off/aux-off" in table and "**(best)**" in table
    assert json.loads((tmp_path / "comparison.json").read_text())["chosen_by"] == "validation AUC"
    assert (tmp_path / "comparison.png").stat().st_size > 5_000


@pytest.mark.integration
def test_served_ensemble_and_in_process_give_the_same_auc(cohort, trained, tmp_path):
    """Same probabilities (1e-4), AUC and Brier; the served decisions on the validation split
    reproduce the operating point's validated counts, and the SDK carries its figures."""
    checkpoint, _ = trained
    manifest = read_manifest(checkpoint)
    point = manifest.operating_point
    assert point is not None and manifest.calibration is not None
    cases = [c for c in read_cohort(cohort / "manifest.csv") if c.split in ("val", "test")]
    local_scores = score_checkpoint(cases, checkpoint, cohort / ".cache")
    local = evaluate(local_scores)
    repo, _ = build_repository(checkpoint, tmp_path / "repo", {"max_batch": 8})
    config = ServerConfig.on_free_ports(repo, supervise_stubs=True)
    with EmbeddedServer(config, log=tmp_path / "server.log") as server:
        server.wait_until_ready(contract.ENSEMBLE, timeout_s=180)
        url = f"127.0.0.1:{config.grpc_port}"
        served_scores = score_server(cases, url)
        served = evaluate(served_scores)
        val = [c for c in cases if c.split == "val"]
        with AlnClient(url, timeout_s=120) as client:
            predictions = client.predict_many([study_of(c) for c in val])
    assert (
        max(abs(a.score - b.score) for a, b in zip(local_scores, served_scores, strict=True))
        <= 1e-4
    )
    assert all(p.operating_point == point for p in predictions)
    called = [p.decision is Decision.LIKELY_POSITIVE for p in predictions]
    assert {p.decision for p in predictions} <= {Decision.LIKELY_POSITIVE, Decision.LOW_RISK}
    positives = [c.label == 1 for c in val]
    assert (
        sum(a and b for a, b in zip(called, positives, strict=True)) == point.sensitivity.successes
    )
    assert (
        sum(not a and not b for a, b in zip(called, positives, strict=True))
        == point.specificity.successes
    )
    for split in ("val", "test"):
        assert served["splits"][split]["auc"] == pytest.approx(
            local["splits"][split]["auc"], abs=1e-9
        )
        assert served["splits"][split]["brier"] == pytest.approx(
            local["splits"][split]["brier"], abs=1e-5
        )
