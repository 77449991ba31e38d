"""``aln_explain``: an occlusion map computed by the served engines through BLS."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from aln.client import AlnClient, Decision, ImageInput, InvalidInputError
from aln.model.reference import ReferencePredictor
from aln.preprocessing import Region, StudyInput
from aln.serving.occlusion import GRID_BOUNDS, occlusion_map

GRID = 4  # 16 occluded crops: the test stays quick; the default (8) is measured in benchmarks


@pytest.fixture(scope="module")
def client(served):
    with AlnClient(served[2], timeout_s=120) as client:
        yield client


@pytest.fixture(scope="module")
def explained(client, study):
    return client.explain(ImageInput(study.dicom, study.lesion_centre), study.clinical, grid=GRID)


def test_the_served_map_equals_occlusion_with_the_torch_model(served, explained, study):
    """The served engines (ONNX Runtime via BLS) give the map torch gives on the same crop."""
    reference = ReferencePredictor(served[1])
    local = reference.predict(StudyInput(study.dicom, Region(*study.lesion_centre)), study.clinical)
    tensors = local.tensors
    head = reference.net.fusion_head
    fixed = [
        reference.net.backbone_auxiliary(torch.from_numpy(tensors.auxiliary_image[None])),
        torch.from_numpy(tensors.auxiliary_present[None]),
        torch.from_numpy(tensors.clinical_vector[None]),
    ]

    @torch.inference_mode()
    def backbone(crops):
        return reference.net.backbone_primary(torch.from_numpy(crops)).numpy()

    @torch.inference_mode()
    def logits(embeddings):
        rows = len(embeddings)
        inputs = [torch.from_numpy(embeddings), *(f.repeat(rows, 1) for f in fixed)]
        return head(*inputs)[0].numpy()

    expected = occlusion_map(tensors.primary_image, local.logit, GRID, backbone, logits)
    assert explained.importance.shape == (GRID, GRID) and explained.grid == GRID
    np.testing.assert_allclose(explained.importance, expected, atol=1e-3)
    assert np.abs(expected).max() > 1e-3  # the map is not all zeros
    assert explained.prediction.probability == pytest.approx(local.probability, abs=1e-4)
    assert explained.prediction.decision is Decision.UNAVAILABLE  # demo weights
    assert explained.crop_box == tuple(local.provenance["primary"]["crop_box"])
    assert explained.crop.shape == (256, 256) and explained.crop.dtype == np.uint8


def test_the_explanation_answers_as_a_prediction(client, explained, study):
    predicted = client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    assert explained.prediction.probability == pytest.approx(predicted.probability, abs=1e-6)
    assert explained.prediction.provenance == predicted.provenance


def test_a_bad_study_is_refused_as_for_a_prediction(client, study):
    outside = ImageInput(study.dicom, (99999.0, 1.0))
    with pytest.raises(InvalidInputError) as predicted:
        client.predict(outside, study.clinical)
    with pytest.raises(InvalidInputError) as explained:
        client.explain(outside, study.clinical, grid=GRID)
    assert explained.value.status == predicted.value.status == "INVALID_ARGUMENT"
    # the same cause, word for word (the ensemble prefixes its own name)
    cause = explained.value.message
    assert "is outside the image" in cause and predicted.value.message.endswith(cause)


@pytest.mark.parametrize("grid", [GRID_BOUNDS[0] - 1, GRID_BOUNDS[1] + 1])
def test_a_grid_outside_the_bounds_is_refused_naming_them(client, study, grid):
    with pytest.raises(
        InvalidInputError, match=r"'explain_grid' is \d+, it must be between 2 and 16"
    ):
        client.explain(ImageInput(study.dicom, study.lesion_centre), study.clinical, grid=grid)
    # and the server still answers
    assert client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical).logit


def test_cli_predict_explain_writes_an_overlay(served, study, tmp_path):
    dicom, record, overlay = tmp_path / "study.dcm", tmp_path / "record.json", tmp_path / "o.png"
    dicom.write_bytes(study.dicom)
    record.write_text(json.dumps(study.clinical))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aln",
            "predict",
            str(dicom),
            "--clinical",
            str(record),
            "--url",
            served[2],
            "--lesion",
            *map(str, study.lesion_centre),
            "--explain",
            str(overlay),
            "--explain-grid",
            str(GRID),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and overlay.stat().st_size > 10_000
    answer = json.loads(done.stdout)
    assert answer["explanation"]["grid"] == GRID and answer["explanation"]["overlay"] == str(
        overlay
    )
