"""The synthetic cohort and a model trained on it, shared by the training tests."""

from __future__ import annotations

import pytest

from aln.synthetic.cohort import write_cohort
from aln.training.cohort import read_cohort
from aln.training.trainer import TrainConfig, train

FAST = TrainConfig(
    backbone="efficientnet_b0", epochs=4, patience=10, augment=False, freeze_backbones=True, seed=0
)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, 200, seed=5, transfer_syntax="explicit", shape=(1400, 1150), cohort=True)
    return out


@pytest.fixture(scope="session")
def trained(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "checkpoint"
    summary = train(read_cohort(cohort / "manifest.csv"), FAST, out, cohort / ".cache")
    return out, summary
