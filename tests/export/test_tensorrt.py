"""The TensorRT path up to TensorRT's own calls, on the CPU: calibration crops, plan checks.

The builds themselves run on GPU machines (``tests/export/test_export.py``, marked ``gpu``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import aln.export.tensorrt as tensorrt
from aln.export.calibration import CalibrationError, calibration_set
from aln.preprocessing.crop import Region
from aln.preprocessing.pipeline import preprocess_image
from aln.serving.engine import load_engine
from aln.serving.spec import EngineSettings
from aln.serving.tensorrt import (
    BuildEnvironment,
    PlanMismatchError,
    TensorRTUnavailableError,
    check_plan_compatible,
)
from aln.synthetic.cohort import write_cohort

HERE = BuildEnvironment("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")


@pytest.fixture(scope="module")
def manifest():
    from tests.preprocessing.test_serving import _manifest

    return _manifest()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site's studies with lesion positions: no labels or splits (all may calibrate)."""
    out = tmp_path_factory.mktemp("site")
    write_cohort(out, 3, seed=4, vendor="ge", shape=(700, 560))
    with (out / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in rows[0] if c not in ("label", "split")]
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return out


def _plan(tmp_path: Path, environment: BuildEnvironment | None) -> Path:
    plan = tmp_path / "backbone_primary.plan"
    plan.write_bytes(b"serialised engine")
    if environment is not None:
        record = {"build_environment": environment.__dict__, "precision": "fp16"}
        plan.with_suffix(".json").write_text(json.dumps(record))
    return plan


def test_a_plan_built_here_is_accepted(tmp_path):
    assert check_plan_compatible(_plan(tmp_path, HERE), here=HERE) == HERE


@pytest.mark.parametrize(
    ("built", "message"),
    [
        (None, "has no backbone_primary.json recording where it was built"),
        (
            BuildEnvironment("10.3.0", HERE.gpu_name, HERE.compute_capability),
            "built with TensorRT 10.3.0, this machine has 10.9.0",
        ),
        (
            BuildEnvironment(HERE.tensorrt_version, "NVIDIA A100", "8.0"),
            r"built on NVIDIA A100 \(sm 8.0\), this machine has NVIDIA H100 80GB HBM3 \(sm 9.0\)",
        ),
    ],
)
def test_a_plan_built_elsewhere_is_refused_naming_both_sides(tmp_path, built, message):
    with pytest.raises(PlanMismatchError, match=message):
        check_plan_compatible(_plan(tmp_path, built), here=HERE)


def test_the_engine_model_checks_the_sidecar_before_loading_a_plan(tmp_path):
    """The served engine refuses a plan at load: first its sidecar, then this machine."""
    _plan(tmp_path, None).rename(tmp_path / "model.plan")
    with pytest.raises(PlanMismatchError, match="model.plan has no model.json"):
        load_engine(tmp_path, EngineSettings())
    (tmp_path / "model.json").write_text(json.dumps({"build_environment": HERE.__dict__}))
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed here"):
        load_engine(tmp_path, EngineSettings())


def test_calibration_crops_are_the_served_preprocessing(site, manifest):
    chosen = calibration_set(site, manifest, count=4)
    assert chosen.crops.shape == (4, 3, 256, 256) and chosen.crops.dtype == np.float32
    assert not chosen.synthetic and chosen.describe()["crops"] == 4
    first = next(csv.DictReader((site / "manifest.csv").open()))
    expected = preprocess_image(
        (site / first["file"]).read_bytes(),
        Region(float(first["lesion_x"]), float(first["lesion_y"])),
        manifest.crop,
    ).tensor
    np.testing.assert_array_equal(chosen.crops[0], expected)


def test_without_a_source_the_crops_are_synthetic_and_say_so(manifest):
    chosen = calibration_set(None, manifest, count=2)
    assert chosen.synthetic and chosen.describe() == {
        "source": "synthetic",
        "synthetic": True,
        "crops": 2,
    }


def test_bad_calibration_input_names_the_cause(site, manifest, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="neither a manifest CSV nor a folder holding"):
        calibration_set(tmp_path / "empty", manifest)
    header = (site / "manifest.csv").read_text().splitlines()[0]
    (tmp_path / "none.csv").write_text(header + "\n")
    with pytest.raises(CalibrationError, match="lists no studies"):
        calibration_set(tmp_path / "none.csv", manifest)
    rows = (site / "manifest.csv").read_text().splitlines()
    (site / "notes.dcm").write_bytes(b"not a dicom at all" * 20)
    bad = rows[1].replace(rows[1].split(",")[0], "notes.dcm", 1)
    (site / "bad.csv").write_text("\n".join([rows[0], rows[2], bad]) + "\n")
    with pytest.raises(CalibrationError, match=r"bad.csv line 3 \('notes.dcm'\): .*not a DICOM"):
        calibration_set(site / "bad.csv", manifest)


def test_int8_plans_get_served_crops_and_the_head_stays_fp16(site, manifest, monkeypatch, tmp_path):
    """Everything up to TensorRT's builder, with the builder replaced by a recorder."""
    built = []
    monkeypatch.setattr(tensorrt, "build_environment", lambda: HERE)
    monkeypatch.setattr(
        tensorrt,
        "build_plan",
        lambda onnx, plan, precision, max_batch, crops=None: (
            built.append((onnx.name, precision, None if crops is None else crops.shape))
            or {"onnx": onnx.name}
        ),
    )
    graphs = [
        tmp_path / f"{n}.onnx" for n in ("backbone_primary", "backbone_auxiliary", "fusion_head")
    ]
    records, calibration = tensorrt.build_plans(graphs, manifest, "int8", 32, site)
    assert calibration == {
        "source": str(site / "manifest.csv"),
        "synthetic": False,
        "crops": 6,
    }  # primary + auxiliary
    assert built == [
        ("backbone_primary.onnx", "int8", (6, 3, 256, 256)),
        ("backbone_auxiliary.onnx", "int8", (6, 3, 256, 256)),
        ("fusion_head.onnx", "fp16", None),
    ]
    assert len(records) == 3


def test_tensorrt_without_a_gpu_is_a_missing_component_not_bad_input():
    from aln.errors import MissingComponentError

    assert issubclass(TensorRTUnavailableError, MissingComponentError)
    assert not issubclass(TensorRTUnavailableError, ValueError)
