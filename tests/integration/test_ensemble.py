"""The served ensemble against the in-process reference, on a real tritonserver over gRPC."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from aln.client import (
    AlnClient,
    AsyncAlnClient,
    ImageInput,
    InferenceTimeoutError,
    InvalidInputError,
    ModelUnavailableError,
    RetryPolicy,
    Study,
)
from aln.client._request import build_arrays, infer_inputs
from aln.model.reference import ReferencePredictor
from aln.preprocessing import Region, StudyInput, contract
from aln.preprocessing.decision import Decision
from aln.synthetic.mammogram import synth_case
from tests.corpus import bad_studies, encapsulated_bad_studies, names_cause

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference(served):
    return ReferencePredictor(served[1])


@pytest.fixture(scope="module")
def client(served):
    with AlnClient(served[2], timeout_s=60) as client:
        yield client


def test_prediction_equals_reference_without_auxiliary(client, reference, study):
    served = client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    local = reference.predict(StudyInput(study.dicom, Region(*study.lesion_centre)), study.clinical)
    assert abs(served.probability - local.probability) <= TOLERANCE
    assert abs(served.logit - local.logit) <= TOLERANCE
    expected = json.loads(json.dumps(local.provenance))
    expected["model"]["engine"] = "onnx/fp32"  # the served engines (the reference is torch)
    assert served.provenance == expected
    assert (
        served.model_version == "demo-seed7"
        and served.provenance["model"]["weights_sha256"] == reference.manifest.weights_sha256
    )
    assert served.provenance["primary"]["flipped"] and served.provenance["auxiliary"] is None
    # demo weights: no operating point, so no decision and no figures, never a made-up threshold
    assert served.decision is Decision.UNAVAILABLE is local.decision
    assert served.operating_point is None


def test_prediction_equals_reference_with_auxiliary(client, reference, study):
    aux = ImageInput(study.dicom, study.auxiliary_centre, study.auxiliary_bbox)
    served = client.predict(
        ImageInput(study.dicom, study.lesion_centre), study.clinical, auxiliary=aux
    )
    local = reference.predict(
        StudyInput(study.dicom, Region(*study.lesion_centre)),
        study.clinical,
        StudyInput(study.dicom, Region(*study.auxiliary_centre, study.auxiliary_bbox)),
    )
    assert abs(served.probability - local.probability) <= TOLERANCE
    assert served.provenance["auxiliary"]["crop_box"] == list(
        local.provenance["auxiliary"]["crop_box"]
    )
    without = client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    assert without.probability != served.probability  # the auxiliary branch is used


def test_served_crop_equals_library_crop(served, reference, study):
    """The skew test: the preprocess model's tensors are exactly aln.preprocessing's."""
    arrays = build_arrays(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    with grpcclient.InferenceServerClient(served[2]) as raw:
        result = raw.infer(contract.PREPROCESS, infer_inputs(grpcclient, arrays))
    local = reference.preprocess(
        StudyInput(study.dicom, Region(*study.lesion_centre)), study.clinical
    )
    np.testing.assert_array_equal(result.as_numpy("primary_image")[0], local.primary_image)
    np.testing.assert_array_equal(result.as_numpy("clinical_vector")[0], local.clinical_vector)
    assert not result.as_numpy("auxiliary_image").any()


def test_concurrent_requests_are_batched_and_each_correct(served, client, reference, make_case):
    from aln.benchmarks import triton_stats

    cases = [make_case("ge", "explicit", seed=s) for s in range(8)]
    studies = [Study(ImageInput(c.dicom, c.lesion_centre), c.clinical) for c in cases]
    url = served[2]
    before = triton_stats.snapshot(url)
    served = client.predict_many(studies, concurrency=8)
    after = triton_stats.settled(url, before, {contract.BACKBONE_PRIMARY: len(studies)})
    window = triton_stats.window(before, after)
    sizes = window[contract.BACKBONE_PRIMARY]["batch_sizes"]
    assert max(sizes) > 1, sizes  # Triton's own statistics: the engine ran real batches
    for case, prediction in zip(cases, served, strict=True):
        local = reference.predict(
            StudyInput(case.dicom, Region(*case.lesion_centre)), case.clinical
        )
        assert abs(prediction.probability - local.probability) <= TOLERANCE


def test_async_client_matches_sync(served, client, study):
    async def run():
        async with AsyncAlnClient(served[2]) as aio:
            await aio.wait_until_ready(timeout_s=10)
            many = await aio.predict_many(
                [Study(ImageInput(study.dicom, study.lesion_centre), study.clinical)] * 3,
                concurrency=3,
            )
            return many, await aio.server_metadata()

    many, metadata = asyncio.run(run())
    sync = client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    assert all(abs(p.probability - sync.probability) <= 1e-6 for p in many)
    assert (
        metadata["server"]["version"] == "2.51.0" and metadata["model"]["name"] == contract.ENSEMBLE
    )


_SMALL = synth_case(np.random.default_rng(0), "ge", "jpeg2000", shape=(300, 240))
BAD_NAMES = [b.name for b in bad_studies(_SMALL) + encapsulated_bad_studies(_SMALL)]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_each_bad_input_is_named_and_concurrent_studies_succeed(client, reference, study, name):
    """Each bad study is sent beside two valid ones in flight at the same time. (The default
    preprocess model takes one study per batch; a shared batch is tested in
    ``test_batch_isolation.py``.)"""
    bad_study = next(
        b for b in bad_studies(study) + encapsulated_bad_studies(study) if b.name == name
    )
    image = ImageInput(bad_study.dicom, bad_study.lesion, bad_study.bbox, **bad_study.options)
    good = Study(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    results = client.predict_many(
        [good, Study(image, bad_study.clinical), good], concurrency=3, return_exceptions=True
    )
    error = results[1]
    assert isinstance(error, InvalidInputError), (bad_study.name, error)
    assert names_cause(bad_study, error.message), (bad_study.name, error.message)
    assert error.status == "INVALID_ARGUMENT"
    local = reference.predict(StudyInput(study.dicom, Region(*study.lesion_centre)), study.clinical)
    for ok in (results[0], results[2]):
        assert abs(ok.probability - local.probability) <= TOLERANCE


def test_server_stays_up_after_bad_input(served, client, study):
    for bad in bad_studies(study):
        with pytest.raises(InvalidInputError):
            client.predict(ImageInput(bad.dicom, bad.lesion, bad.bbox, **bad.options), bad.clinical)
    assert served[0].is_ready(contract.ENSEMBLE)
    assert (
        0
        < client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical).probability
        < 1
    )


RAW_BAD = {
    "wrong_shape": (
        lambda a: {**a, "primary_region": np.zeros((1, 4), np.float32)},
        "primary_region",
    ),
    "wrong_dtype": (
        lambda a: {**a, "primary_region": a["primary_region"].astype(np.float64)},
        "primary_region",
    ),
    "two_studies_in_one_request": (
        lambda a: {**a, **{k: np.concatenate([v, v]) for k, v in a.items()}},
        # the ensemble's max_batch_size is 1, so Triton refuses it before preprocessing
        "batch-size must be <= 1 for 'aln_ensemble'",
    ),
    "missing_required_input": (
        lambda a: {k: v for k, v in a.items() if k != "clinical_record"},
        "clinical_record",
    ),
}


@pytest.mark.parametrize("name", sorted(RAW_BAD))
def test_malformed_tensors_straight_to_the_ensemble(served, study, name):
    change, expected = RAW_BAD[name]
    arrays = change(build_arrays(ImageInput(study.dicom, study.lesion_centre), study.clinical))
    with (
        grpcclient.InferenceServerClient(served[2]) as raw,
        pytest.raises(Exception, match=expected) as info,
    ):
        raw.infer(contract.ENSEMBLE, infer_inputs_raw(arrays))
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert served[0].is_ready(contract.ENSEMBLE)


def infer_inputs_raw(arrays):
    """InferInputs that keep whatever dtype the (malformed) arrays have."""
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, array in arrays.items():
        item = grpcclient.InferInput(
            name,
            list(array.shape),
            "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype),
        )
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def test_error_mapping_timeouts_and_unknown_model(served, study):
    with (
        AlnClient(served[2], model_name="no_such_model") as wrong,
        pytest.raises(ModelUnavailableError),
    ):
        wrong.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    with AlnClient(served[2]) as client:
        for _ in range(5):
            with pytest.raises(InferenceTimeoutError):
                client.predict(
                    ImageInput(study.dicom, study.lesion_centre), study.clinical, timeout_s=0.005
                )
        # missed deadlines cost the server nothing: it is up and answers normally
        assert served[0].process.poll() is None
        assert (
            client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical).probability
            > 0
        )


def test_unreachable_server_retries_then_gives_up(study):
    from aln.serving.server import free_port

    with (
        AlnClient(
            f"127.0.0.1:{free_port()}", retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05)
        ) as client,
        pytest.raises(ModelUnavailableError) as info,
    ):
        client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical, timeout_s=10)
    assert info.value.status == "UNAVAILABLE"


def test_metrics_endpoint_counts_inferences(served, client, study):
    client.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
    port = served[0].config.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'nv_inference_request_success{model="aln_ensemble"' in text


def test_cli_predict_exit_codes(served, study, tmp_path):
    dicom, record = tmp_path / "study.dcm", tmp_path / "record.json"
    dicom.write_bytes(study.dicom)
    record.write_text(json.dumps(study.clinical))
    base = [
        sys.executable,
        "-m",
        "aln",
        "predict",
        str(dicom),
        "--clinical",
        str(record),
        "--url",
        served[2],
    ]
    ok = subprocess.run(
        [*base, "--lesion", *map(str, study.lesion_centre), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert 0 < json.loads(ok.stdout)["probability"] < 1
    shared = subprocess.run(
        [*base, "--lesion", *map(str, study.lesion_centre), "--json", "--shared-memory"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shared.returncode == 0 and "SharedMemoryFallbackWarning" not in shared.stderr
    assert json.loads(shared.stdout)["probability"] == json.loads(ok.stdout)["probability"]
    bad = subprocess.run(
        [*base, "--lesion", "99999", "1"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "is outside the image" in bad.stderr


def test_an_auxiliary_on_another_file_keeps_its_own_view_through_the_server(client, study):
    """The primary's override describes the primary's header, never another file's."""
    mlo = synth_case(
        np.random.default_rng(6),
        "hologic",
        "explicit",
        shape=(900, 760),
        laterality="R",
        view="MLO",
    )
    primary = ImageInput(study.dicom, study.lesion_centre, view="CC")  # an MLO, overridden
    served = client.predict(
        primary, study.clinical, auxiliary=ImageInput(mlo.dicom, mlo.auxiliary_centre)
    )
    assert served.provenance["primary"]["view"] == "CC"
    assert served.provenance["auxiliary"]["view"] == "MLO"  # its own header, not the override
    # an auxiliary region on the primary's own file inherits the override
    same = client.predict(
        primary, study.clinical, auxiliary=ImageInput(study.dicom, study.auxiliary_centre)
    )
    assert same.provenance["auxiliary"]["view"] == "CC"
