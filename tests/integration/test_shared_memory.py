"""Studies through Triton system shared memory, against the real server.

The SDK's own behaviour (a region per request, reuse, release, fallback, stale regions of a killed
process) and the server's answers to a bad region sent by a raw tritonclient caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from aln.client import AlnClient, ImageInput, Study, _request
from aln.client.shared_memory import Region, SharedMemoryFallbackWarning
from aln.preprocessing import contract


def _registered(url: str) -> dict:
    client = grpcclient.InferenceServerClient(url)
    try:
        return client.get_system_shared_memory_status(as_json=True).get("regions", {})
    finally:
        client.close()


def _of(client: AlnClient, names) -> list[str]:
    """Regions of one client."""
    return [n for n in names if n.startswith(f"{client._shared.pool.prefix}_")]


@pytest.fixture(scope="module")
def studies(make_case):
    """Two uncompressed studies of different sizes."""
    small = make_case("hologic", "explicit", seed=31, laterality="R", view="CC")
    large = make_case(
        "hologic", "explicit", seed=32, laterality="L", view="MLO", shape=(2200, 1800)
    )
    return [Study(ImageInput(c.dicom, lesion=c.lesion_centre), c.clinical) for c in (small, large)]


def test_a_study_through_shared_memory_equals_the_same_study_as_bytes(served, studies):
    _, _, url = served
    study = studies[0]
    with AlnClient(url) as plain:
        reference = plain.predict(study.primary, study.clinical)
    with AlnClient(url, shared_memory=True) as client:
        answer = client.predict(study.primary, study.clinical)
        assert client.uses_shared_memory
        assert len(_of(client, _registered(url))) == 1
    assert answer.probability == reference.probability
    assert answer.provenance == reference.provenance
    assert _of(client, _registered(url)) == [], "close() leaves a region registered"
    assert _of(client, os.listdir("/dev/shm")) == [], "close() leaves a region linked"


def test_concurrent_requests_each_get_their_own_region(served, studies):
    _, _, url = served
    with AlnClient(url) as plain:
        references = [plain.predict(s.primary, s.clinical).probability for s in studies]
    mixed = [studies[i % 2] for i in range(12)]
    with AlnClient(url, shared_memory=True) as client:
        answers = client.predict_many(mixed, concurrency=4)
    # two studies of different sizes, four at a time: had two requests shared a region, some
    # answer would be the other study's (their probabilities differ by far more than the few
    # float32 ulps a different dynamic batch composition moves an answer)
    assert abs(references[0] - references[1]) > 1e-4
    expected = [references[i % 2] for i in range(12)]
    assert [a.probability for a in answers] == pytest.approx(expected, abs=1e-6)
    assert _of(client, _registered(url)) == []


def test_the_client_falls_back_to_bytes_when_the_server_cannot_map_its_region(
    served, studies, monkeypatch
):
    _, _, url = served
    create = Region.__init__

    def elsewhere(self, name, size):  # the segment exists only "on another host"
        create(self, name, size)
        os.unlink(f"/dev/shm/{name}")

    monkeypatch.setattr(Region, "__init__", elsewhere)
    study = studies[0]
    with AlnClient(url, shared_memory=True) as client:
        with pytest.warns(SharedMemoryFallbackWarning, match="could not map"):
            answer = client.predict(study.primary, study.clinical)
        assert not client.uses_shared_memory
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once, not per call
            client.predict(study.primary, study.clinical)
    with AlnClient(url) as plain:
        assert answer.probability == plain.predict(study.primary, study.clinical).probability


def test_a_region_unregistered_behind_the_client_is_registered_again(served, studies):
    _, _, url = served
    study = studies[0]
    with AlnClient(url, shared_memory=True) as client:
        first = client.predict(study.primary, study.clinical)
        (name,) = _of(client, _registered(url))
        other = grpcclient.InferenceServerClient(url)
        other.unregister_system_shared_memory(name)
        other.close()
        assert client.predict(study.primary, study.clinical).probability == first.probability
        assert _of(client, _registered(url)) == [name]


UNCLOSED_CLIENT = textwrap.dedent(
    """
    import os, signal, sys
    from aln.client import AlnClient, ImageInput
    data = open(sys.argv[2], "rb").read()
    client = AlnClient(sys.argv[1], shared_memory=True)  # never closed
    client.predict(ImageInput(data, lesion=(float(sys.argv[3]), float(sys.argv[4]))), sys.argv[5])
    print(os.getpid(), flush=True)
    if sys.argv[6] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _unclosed_client(url, study, tmp_path, ending: str) -> subprocess.CompletedProcess:
    import json

    dicom = tmp_path / "study.dcm"
    dicom.write_bytes(study.primary.dicom)
    return subprocess.run(
        [sys.executable, "-c", UNCLOSED_CLIENT, url, str(dicom), *map(str, study.primary.lesion)]
        + [json.dumps(study.clinical), ending],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_client_never_closed_releases_its_regions_at_exit(served, studies, tmp_path):
    _, _, url = served
    run = _unclosed_client(url, studies[0], tmp_path, "exit")
    assert run.returncode == 0, run.stderr
    pid = run.stdout.split()[0]
    assert not [n for n in _registered(url) if f"_{pid}_" in n]
    assert not [n for n in os.listdir("/dev/shm") if f"_{pid}_" in n]


def test_regions_of_a_killed_client_are_reaped_by_the_next_client(served, studies, tmp_path):
    _, _, url = served
    study = studies[0]
    run = _unclosed_client(url, study, tmp_path, "kill")
    assert run.returncode == -signal.SIGKILL, run.stderr
    pid = run.stdout.split()[0]
    left = [n for n in _registered(url) if f"_{pid}_" in n]
    # Still registered; Python's resource tracker may already have unlinked the segment.
    assert len(left) == 1, "nothing to reap"
    with AlnClient(url, shared_memory=True) as client:
        client.predict(study.primary, study.clinical)
        assert not [n for n in _registered(url) if f"_{pid}_" in n]
        assert not os.path.exists(f"/dev/shm/{left[0]}")


@pytest.fixture
def raw_region(served, studies):
    """``make(name, size)``: a region holding the first study, registered by a raw caller."""
    _, _, url = served
    data = np.frombuffer(studies[0].primary.dicom, np.uint8)
    client = grpcclient.InferenceServerClient(url)
    made = []

    def make(name: str, size: int):
        handle = shm.create_shared_memory_region(name, f"/{name}", size)
        shm.set_shared_memory_region(handle, [data[:size]])
        client.register_system_shared_memory(name, f"/{name}", size)
        made.append((name, handle))
        return data

    yield client, make
    for name, handle in made:
        client.unregister_system_shared_memory(name)
        with contextlib.suppress(FileNotFoundError):  # a test may have unlinked it
            shm.destroy_shared_memory_region(handle)
    client.close()


def _infer_from_region(client, study, region: str, size: int, offset: int = 0):
    arrays = _request.build_arrays(study.primary, study.clinical)
    inputs = _request.infer_inputs(grpcclient, arrays)
    inputs[0].set_shared_memory(region, size, offset)
    return client.infer(contract.ENSEMBLE, inputs)


@pytest.mark.parametrize(
    ("case", "status", "named"),
    [
        ("region smaller than the input", "INVALID_ARGUMENT", "raw_small"),
        ("offset past the input", "INVALID_ARGUMENT", "raw_offset"),
        ("size other than the input's shape", "INVALID_ARGUMENT", "primary_dicom"),
        ("region never registered", "NOT_FOUND", "raw_unknown"),
    ],
)
def test_a_bad_region_from_a_raw_caller_is_refused_and_nothing_else_breaks(
    served, studies, raw_region, case, status, named
):
    _, _, url = served
    client, make = raw_region
    study = studies[0]
    size = len(study.primary.dicom)
    with AlnClient(url, shared_memory=True) as bystander:
        before = bystander.predict(study.primary, study.clinical).probability
        (theirs,) = _of(bystander, _registered(url))
        with pytest.raises(InferenceServerException) as refused:
            if case == "region smaller than the input":
                make("raw_small", size // 2)
                _infer_from_region(client, study, "raw_small", size)
            elif case == "offset past the input":
                make("raw_offset", size)
                _infer_from_region(client, study, "raw_offset", size, offset=64)
            elif case == "size other than the input's shape":
                make("raw_size", size)
                _infer_from_region(client, study, "raw_size", size - 10)
            else:
                _infer_from_region(client, study, "raw_unknown", size)
        assert refused.value.status() == f"StatusCode.{status}"
        assert named in refused.value.message()
        assert client.is_server_ready()
        assert theirs in _registered(url), "another client's region was touched"
        assert bystander.predict(study.primary, study.clinical).probability == before


def test_a_region_unlinked_after_registration_still_serves(served, studies, raw_region):
    """Triton maps a region when it is registered; unlinking the name later changes nothing."""
    _, _, url = served
    client, make = raw_region
    study = studies[0]
    size = len(study.primary.dicom)
    make("raw_unlinked", size)
    os.unlink("/dev/shm/raw_unlinked")
    result = _infer_from_region(client, study, "raw_unlinked", size)
    with AlnClient(url) as plain:
        expected = plain.predict(study.primary, study.clinical).probability
    assert result.as_numpy(contract.ALN_PROBABILITY.name).reshape(-1)[0] == pytest.approx(expected)
