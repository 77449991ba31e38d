"""A crashed Python-backend stub is restored, readiness tells the truth, callers lose nothing.

SIGSEGV stands in for a native decoder crashing on a hostile file. The server is started as
``aln serve`` starts it (``supervise_stubs``), on the session's repository, under load.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from aln.client import AlnClient, AlnClientError, ImageInput
from aln.preprocessing import contract
from aln.serving.server import EmbeddedServer, ServerConfig, free_port
from aln.serving.supervisor import API_KEY_HEADER, death, stubs_of

MODELS = (
    contract.PREPROCESS,
    contract.BACKBONE_PRIMARY,
    contract.BACKBONE_AUXILIARY,
    contract.FUSION_HEAD,
)


@pytest.fixture(scope="module")
def supervised(served, tmp_path_factory):
    repository = served[0].config.repository
    log = tmp_path_factory.mktemp("supervised") / "tritonserver.log"
    config = ServerConfig(
        repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        supervise_stubs=True,
    )
    server = EmbeddedServer(config, log=log).start()
    try:
        server.wait_until_ready(contract.ENSEMBLE, timeout_s=240)
        yield server, f"127.0.0.1:{config.grpc_port}", log
    finally:
        server.stop(timeout_s=10)  # four reloads later, Triton 2.51 can hang on exit


def test_a_segfaulted_stub_of_each_model_is_restored_and_no_request_is_lost(supervised, study):
    server, url, log = supervised
    image = ImageInput(study.dicom, lesion=study.lesion_centre)
    answers: list[float] = []
    failures: list[AlnClientError] = []
    stop = threading.Event()

    def caller() -> None:
        with AlnClient(url, timeout_s=90) as client:
            while not stop.is_set():
                try:
                    answers.append(client.predict(image, study.clinical).probability)
                except AlnClientError as exc:
                    failures.append(exc)

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for thread in callers:
        thread.start()
    recovery_s = {}
    try:
        for model in MODELS:
            time.sleep(2.0)  # requests retried through the last restore have drained
            stub = next(s for s in stubs_of(server.pid) if s.model == model)
            killed = time.monotonic()
            os.kill(stub.pid, signal.SIGSEGV)
            seen_unready = False
            while time.monotonic() - killed < 120:
                if not server.is_ready():
                    seen_unready = True
                elif seen_unready:
                    break
                time.sleep(0.02)
            recovery_s[model] = time.monotonic() - killed
            assert seen_unready, f"readiness stayed true after the {model} stub died"
            assert server.is_ready(), f"{model} was not restored within 120 s"
            assert death(stub) in (None, "gone", "killed by SIGSEGV")
    finally:
        stop.set()
        for thread in callers:
            thread.join()
    print("time to recovery per model (s):", {k: round(v, 1) for k, v in recovery_s.items()})
    assert failures == [], f"{len(failures)} requests lost: {failures[:3]}"
    assert len(answers) > 10 and max(answers) - min(answers) < 1e-5  # batch composition: ulps
    text = log.read_text()
    for model in MODELS:
        assert f"died (killed by SIGSEGV); reloading model '{model}'" in text
    assert len(server.supervisor.recoveries) == len(MODELS)


def test_the_repository_api_refuses_callers_without_the_key(supervised):
    import urllib.error
    import urllib.request

    server, _, _ = supervised
    request = urllib.request.Request(
        f"http://{server.config.host}:{server.config.http_port}"
        f"/v2/repository/models/{contract.PREPROCESS}/unload",
        data=b"{}",
        headers={API_KEY_HEADER: "guess"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (401, 403)
    assert server.is_ready(contract.PREPROCESS)
