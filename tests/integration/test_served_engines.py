"""Other engines served for real: int8 ONNX and OpenVINO answer within the gate's bound of fp32.

The model is the session's checkpoint trained on the synthetic cohort; the int8 export passed
the fidelity gate (``tests/trained.py``). Each repository is built by ``build_repository`` from an
export folder, whose report decides the engines, and served by the embedded Triton; answers are
set against the in-process fp32 torch reference on studies of the test split.
"""

from __future__ import annotations

import csv

import pytest

from aln.client import AlnClient, ImageInput
from aln.export.fidelity import PROBABILITY_MAX_ABS
from aln.export.pipeline import export_checkpoint
from aln.export.repository import build_repository
from aln.model.reference import ReferencePredictor
from aln.preprocessing import contract
from aln.preprocessing.crop import Region
from aln.preprocessing.pipeline import StudyInput


@pytest.fixture(scope="module", params=["onnx/int8", "openvino/fp32"])
def engine_url(request, onnx_int8, trained, serve_repository, tmp_path_factory):
    label = request.param
    work = tmp_path_factory.mktemp(label.replace("/", "-"))
    export = onnx_int8
    if label == "openvino/fp32":
        export = work / "export"
        export_checkpoint(trained[0], export, "openvino", "fp32")
    repo, spec = build_repository(export, work / "repo", {"backbone_instances": 1})
    assert spec.engine_label == label
    folder = repo / contract.BACKBONE_PRIMARY / "1"
    if label == "openvino/fp32":
        assert (folder / "model.xml").is_file() and (folder / "model.bin").is_file()
        assert not (folder / "model.onnx").exists()
    with serve_repository(repo) as url:
        yield label, url


def test_served_engines_answer_within_the_gate_of_the_fp32_reference(engine_url, trained, cohort):
    label, url = engine_url
    reference = ReferencePredictor(trained[0])
    rows = [r for r in csv.DictReader((cohort / "manifest.csv").open()) if r["split"] == "test"]
    with AlnClient(url, timeout_s=120) as client:
        for row in rows[:6]:
            dicom = (cohort / row["file"]).read_bytes()
            region = Region(float(row["lesion_x"]), float(row["lesion_y"]))
            served = client.predict(
                ImageInput(dicom, (region.centre_x, region.centre_y)), row["clinical"]
            )
            expected = reference.predict(StudyInput(dicom, region), row["clinical"])
            assert abs(served.probability - expected.probability) <= PROBABILITY_MAX_ABS, row
            assert served.provenance["model"]["engine"] == label
            assert (
                served.provenance["model"]["weights_sha256"]
                == (expected.provenance["model"]["weights_sha256"])
            )
