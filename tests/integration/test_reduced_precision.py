"""An OpenVINO int8 repository served for real answers within the fidelity gate of fp32."""

from __future__ import annotations

import csv

import pytest

from aln.client import AlnClient, ImageInput
from aln.export.fidelity import PROBABILITY_MAX_ABS
from aln.export.repository import build_repository
from aln.model.reference import ReferencePredictor
from aln.preprocessing import contract
from aln.preprocessing.crop import Region
from aln.preprocessing.pipeline import StudyInput


@pytest.fixture(scope="module")
def int8_url(openvino_int8, serve_repository, tmp_path_factory):
    repo, spec = build_repository(
        openvino_int8, tmp_path_factory.mktemp("int8") / "repo", {"backbone_instances": 1}
    )
    assert spec.engine_label == "openvino/int8"
    engine = repo / contract.BACKBONE_PRIMARY / "1"
    assert (engine / "model.xml").is_file() and (engine / "model.bin").is_file()
    assert not (engine / "model.onnx").exists()
    with serve_repository(repo) as url:
        yield url


def test_served_int8_answers_within_the_gate_of_the_fp32_reference(int8_url, trained, cohort):
    reference = ReferencePredictor(trained[0])
    rows = [r for r in csv.DictReader((cohort / "manifest.csv").open()) if r["split"] == "test"]
    with AlnClient(int8_url, timeout_s=120) as client:
        for row in rows[:6]:
            dicom = (cohort / row["file"]).read_bytes()
            region = Region(float(row["lesion_x"]), float(row["lesion_y"]))
            served = client.predict(
                ImageInput(dicom, (region.centre_x, region.centre_y)), row["clinical"]
            )
            expected = reference.predict(StudyInput(dicom, region), row["clinical"])
            assert abs(served.probability - expected.probability) <= PROBABILITY_MAX_ABS, row
            assert served.provenance["model"]["engine"] == "openvino/int8"
            assert (
                served.provenance["model"]["weights_sha256"]
                == (expected.provenance["model"]["weights_sha256"])
            )
