"""The experiment grid, and evaluating what you serve: the served ensemble gives the same AUC."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from aln.export.repository import build_repository
from aln.preprocessing import contract
from aln.serving.server import EmbeddedServer, ServerConfig, free_port
from aln.training.cohort import read_cohort
from aln.training.evaluate import evaluate, score_checkpoint, score_server
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
    checkpoint, _ = trained
    cases = [c for c in read_cohort(cohort / "manifest.csv") if c.split in ("val", "test")]
    local = evaluate(score_checkpoint(cases, checkpoint, cohort / ".cache"))
    repo, _ = build_repository(checkpoint, tmp_path / "repo", {"max_batch": 8})
    config = ServerConfig(
        repo,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        supervise_stubs=True,
    )
    with EmbeddedServer(config, log=tmp_path / "server.log") as server:
        server.wait_until_ready(contract.ENSEMBLE, timeout_s=180)
        served = evaluate(score_server(cases, f"127.0.0.1:{config.grpc_port}"))
    for split in ("val", "test"):
        assert served["splits"][split]["auc"] == pytest.approx(
            local["splits"][split]["auc"], abs=1e-9
        )
        assert served["splits"][split]["brier"] == pytest.approx(
            local["splits"][split]["brier"], abs=1e-5
        )
