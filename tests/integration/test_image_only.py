"""A model trained without the auxiliary branch, served for real: auxiliary regions are refused."""

from __future__ import annotations

import json

import pytest

from aln.client import AlnClient, ImageInput, InvalidInputError
from aln.preprocessing import contract
from aln.preprocessing.manifest import MANIFEST_FILE


@pytest.fixture(scope="module")
def image_only_url(repository_variant, serve_repository):
    """The session's model with its manifest saying ``auxiliary: false``."""
    repo = repository_variant("image_only")
    manifest = repo / contract.PREPROCESS / "1" / MANIFEST_FILE
    raw = json.loads(manifest.read_text())
    raw.update(auxiliary=False, model_version="image-only")
    manifest.write_text(json.dumps(raw))
    with serve_repository(repo) as url:
        yield url


def test_an_auxiliary_region_to_an_image_only_model_is_invalid_argument(image_only_url, study):
    with AlnClient(image_only_url, timeout_s=60) as client:
        answer = client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
        assert answer.model_version == "image-only" and answer.provenance["auxiliary"] is None
        with pytest.raises(InvalidInputError) as refused:
            client.predict(
                ImageInput(study.dicom, study.lesion_centre),
                study.clinical,
                auxiliary=ImageInput(study.dicom, study.auxiliary_centre),
            )
        assert refused.value.status == "INVALID_ARGUMENT"
        assert "'auxiliary_region' was sent" in refused.value.message
        assert "no auxiliary branch" in refused.value.message
        # the server stays up and answers the next request
        assert client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
