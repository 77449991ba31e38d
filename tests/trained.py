"""The synthetic cohort and a model trained on it, shared by the training and export tests.

The fixtures are registered for the whole suite in ``tests/conftest.py``, so the cohort is written
and the model trained once per session.
"""

from __future__ import annotations

import pytest

from aln.export.calibration import DEFAULT_HELD_OUT
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


HELD_OUT = DEFAULT_HELD_OUT
"""Held-out crops of the fidelity gate in tests: the command's default (with fewer, one swapped
pair of studies moves the AUC past its bound)."""


@pytest.fixture(scope="session")
def onnx_int8(trained, cohort, tmp_path_factory):
    """The trained model exported as int8 QDQ ONNX, calibrated on the cohort, gate passed."""
    from aln.export.pipeline import export_checkpoint

    out = tmp_path_factory.mktemp("onnx-int8") / "export"
    export_checkpoint(trained[0], out, "onnx", "int8", calibration=cohort, held_out=HELD_OUT)
    return out
