"""A model trained without the auxiliary branch, served for real: auxiliary regions are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from aln.client import AlnClient, ImageInput, InvalidInputError
from aln.preprocessing import contract
from aln.preprocessing.manifest import MANIFEST_FILE
from aln.serving.server import EmbeddedServer, ServerConfig, free_port


@pytest.fixture(scope="module")
def image_only_url(served, tmp_path_factory):
    """The session's repository with its manifest saying ``auxiliary: false``."""
    repo = tmp_path_factory.mktemp("image_only") / "repo"
    shutil.copytree(served[0].config.repository, repo, symlinks=True)
    manifest = repo / contract.PREPROCESS / "1" / MANIFEST_FILE
    raw = json.loads(manifest.read_text())
    raw.update(auxiliary=False, model_version="image-only")
    manifest.write_text(json.dumps(raw))
    config = ServerConfig(
        repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port()
    )
    server = EmbeddedServer(config, log=repo.parent / "tritonserver.log").start()
    try:
        server.wait_until_ready(contract.ENSEMBLE, timeout_s=240)
        yield f"127.0.0.1:{config.grpc_port}"
    finally:
        server.stop()


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
