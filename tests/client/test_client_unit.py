"""Client logic without a server: request building, error mapping, retries and deadlines.

Retries and deadlines are driven by a fake at tritonclient's boundary (a server cannot be made
to answer UNAVAILABLE on demand); the real server paths are in tests/integration.
"""

import json
import math
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from aln.client import (
    AlnClient,
    ImageInput,
    InferenceTimeoutError,
    InvalidInputError,
    ModelUnavailableError,
    RetryPolicy,
    ServerError,
)
from aln.client._request import build_arrays
from aln.client.errors import from_server_exception, status_name


def test_build_arrays_follow_the_contract():
    arrays = build_arrays(
        ImageInput(b"DICM-bytes", (10, 20), laterality="L"),
        {"age_years": 50},
        ImageInput(b"other", (1, 2), (0, 0, 4, 4)),
    )
    assert arrays["primary_dicom"].dtype == np.uint8 and arrays["primary_dicom"].shape == (1, 10)
    region = arrays["primary_region"]
    assert region.shape == (1, 6) and region[0, 0] == 10 and math.isnan(region[0, 2])
    assert json.loads(arrays["clinical_record"][0, 0]) == {"age_years": 50}
    assert arrays["auxiliary_region"][0].tolist() == [1, 2, 0, 0, 4, 4]
    assert json.loads(arrays["request_options"][0, 0]) == {"primary": {"laterality": "L"}}


def test_auxiliary_on_the_primary_image_sends_only_a_region():
    arrays = build_arrays(ImageInput(b"same", (1, 1)), "{}", ImageInput(b"same", (5, 5)))
    assert "auxiliary_dicom" not in arrays and "auxiliary_region" in arrays


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        ("StatusCode.INVALID_ARGUMENT", InvalidInputError),
        ("StatusCode.UNAVAILABLE", ModelUnavailableError),
        ("StatusCode.NOT_FOUND", ModelUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", InferenceTimeoutError),
        ("StatusCode.INTERNAL", ServerError),
        (None, ServerError),
    ],
)
def test_status_mapping_keeps_the_message(status, cls):
    error = from_server_exception(InferenceServerException("the reason", status=status))
    assert type(error) is cls and error.message == "the reason"
    assert error.status == status_name(status)


class FakeTriton:
    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = []
        self.request_ids = []

    def infer(self, model, inputs, outputs=None, request_id="", timeout=None, client_timeout=None):
        self.calls.append((timeout, client_timeout))
        self.request_ids.append(request_id)
        if self.errors:
            error = self.errors.pop(0)
            if isinstance(error, float):
                time.sleep(error)  # a slow answer
                return None
            raise InferenceServerException("no", status=error)
        raise AssertionError("stop")

    def close(self):
        pass


def _client(fake, **kwargs):
    client = AlnClient("localhost:1", **kwargs)
    client._client = fake
    return client


def test_unavailable_is_retried_with_bounded_attempts():
    fake = FakeTriton(["StatusCode.UNAVAILABLE"] * 10)
    client = _client(fake, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01))
    with pytest.raises(ModelUnavailableError) as info:
        client.predict(ImageInput(b"x", (1, 1)), "{}")
    assert len(fake.calls) == 3 and isinstance(info.value.__cause__, InferenceServerException)
    # the error says how hard the client tried, so a lost request can be told from a refusal
    assert info.value.tries == 3 and 0.02 < info.value.elapsed_s < 1.0
    assert str(info.value).endswith(f"gave up after 3 tries in {info.value.elapsed_s:.1f} s)")


def test_every_try_of_a_call_shares_one_random_request_id_that_the_error_names():
    fake = FakeTriton(["StatusCode.UNAVAILABLE"] * 3 + ["StatusCode.INVALID_ARGUMENT"])
    client = _client(fake, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01))
    with pytest.raises(ModelUnavailableError) as first:
        client.predict(ImageInput(b"x", (1, 1)), "{}")
    with pytest.raises(InvalidInputError) as second:
        client.predict(ImageInput(b"x", (1, 1)), "{}")
    ids = fake.request_ids
    assert len(ids) == 4 and len(set(ids[:3])) == 1 and ids[3] != ids[0]
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)  # random hex, nothing about the study
    assert first.value.request_id == ids[0] and f"request {ids[0]}" in str(first.value)
    assert second.value.request_id == ids[3]


def test_other_errors_are_never_retried():
    fake = FakeTriton(["StatusCode.INVALID_ARGUMENT"])
    with pytest.raises(InvalidInputError) as info:
        _client(fake).predict(ImageInput(b"x", (1, 1)), "{}")
    assert len(fake.calls) == 1
    assert info.value.tries == 1 and "gave up" not in str(info.value)


def test_deadline_bounds_the_retries():
    fake = FakeTriton(["StatusCode.UNAVAILABLE"] * 100)
    client = _client(
        fake, retry=RetryPolicy(max_attempts=100, initial_backoff_s=0.05, max_backoff_s=0.05)
    )
    start = time.monotonic()
    with pytest.raises((InferenceTimeoutError, ModelUnavailableError)):
        client.predict(ImageInput(b"x", (1, 1)), "{}", timeout_s=0.3)
    assert time.monotonic() - start < 1.0
    # the server enforces what is left of the deadline; the gRPC call is cancelled only later
    assert all(
        server_us <= 300_000 and grpc_s > server_us / 1e6 for server_us, grpc_s in fake.calls
    )


def test_a_server_that_stays_unavailable_is_reported_with_its_cause_before_the_deadline():
    """All replicas down: the refusal itself, not a timeout and never a wait past the deadline."""
    fake = FakeTriton(["StatusCode.UNAVAILABLE"] * 100)
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        _client(fake).predict(ImageInput(b"x", (1, 1)), "{}", timeout_s=1.0)
    assert time.monotonic() - start < 1.0 and len(fake.calls) > 1
    assert isinstance(info.value.__cause__, InferenceServerException)


def test_passing_server_states_are_retried_and_others_are_not():
    reloading = "Request for unknown model: 'aln_ensemble' has no available versions"
    dead_stub = "in ensemble 'aln_ensemble', Stub process 'preprocess_0_1' is not healthy."

    class Then(FakeTriton):
        def infer(self, *args, **kwargs):
            self.calls.append(None)
            if self.errors:
                status, message = self.errors.pop(0)
                raise InferenceServerException(message, status=status)
            raise AssertionError("answered")  # stands for the answer after the retries

    fake = Then([("StatusCode.NOT_FOUND", reloading), ("StatusCode.INTERNAL", dead_stub)])
    with pytest.raises(AssertionError, match="answered"):
        _client(fake, retry=RetryPolicy(initial_backoff_s=0.01)).predict(
            ImageInput(b"x", (1, 1)), "{}"
        )
    assert len(fake.calls) == 3
    unknown = Then([("StatusCode.NOT_FOUND", "Request for unknown model: 'nope'")])
    with pytest.raises(ModelUnavailableError):
        _client(unknown).predict(ImageInput(b"x", (1, 1)), "{}")
    assert len(unknown.calls) == 1


def test_answer_after_the_deadline_is_a_timeout():
    with pytest.raises(InferenceTimeoutError, match="after the deadline"):
        _client(FakeTriton([0.3])).predict(ImageInput(b"x", (1, 1)), "{}", timeout_s=0.1)


def test_server_side_deadline_rejection_is_a_timeout():
    class ServerTimesOut(FakeTriton):
        def infer(self, *args, **kwargs):
            time.sleep(0.15)  # the server holds the request until its timeout, then rejects it
            raise InferenceServerException(
                "in ensemble 'aln_ensemble', Request timeout expired",
                status="StatusCode.UNAVAILABLE",
            )

    with pytest.raises(InferenceTimeoutError, match="Request timeout expired"):
        _client(ServerTimesOut([])).predict(ImageInput(b"x", (1, 1)), "{}", timeout_s=0.1)


def test_unreadable_dicom_path():
    with pytest.raises(Exception, match="Cannot read DICOM file"):
        ImageInput("/nonexistent.dcm", (1, 1)).dicom_bytes()
