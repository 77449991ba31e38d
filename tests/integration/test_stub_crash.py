"""A crashed Python-backend stub is restored, readiness tells the truth, callers lose nothing.

SIGSEGV stands in for a native decoder crashing on a hostile file. The server is started as
``aln serve`` starts it (``supervise_stubs``), on the session's repository, under load.
"""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from pathlib import Path

import pydicom
import pytest

from aln.benchmarks import recovery
from aln.client import AlnClient, AlnClientError, ImageInput, InvalidInputError
from aln.preprocessing import contract, decode
from aln.serving.server import EmbeddedServer, ServerConfig
from aln.serving.supervisor import API_KEY_HEADER, LEFTOVER_GRACE_S, death, stubs_of

MODELS = recovery.MODELS


@pytest.fixture(scope="module")
def supervised(served, tmp_path_factory):
    repository = served[0].config.repository
    log = tmp_path_factory.mktemp("supervised") / "tritonserver.log"
    config = ServerConfig.on_free_ports(repository, supervise_stubs=True)
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
    answered_at = [0.0, 0.0, 0.0]  # per caller: when its last answer came
    stop = threading.Event()

    def caller(index: int) -> None:
        with AlnClient(url, timeout_s=90) as client:
            while not stop.is_set():
                try:
                    answers.append(client.predict(image, study.clinical).probability)
                    answered_at[index] = time.monotonic()
                except AlnClientError as exc:
                    failures.append(exc)

    def every_caller_answered_since(moment: float) -> None:
        """Each crash is judged alone: no request still retrying the last one meets the next."""
        deadline = time.monotonic() + 60
        while min(answered_at) <= moment and time.monotonic() < deadline:
            time.sleep(0.05)

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(len(answered_at))]
    for thread in callers:
        thread.start()
    recovery_s = {}
    instances = {m: sum(s.model == m for s in stubs_of(server.pid)) for m in MODELS}
    dead_regions: tuple[str, ...] = ()
    try:
        for model in MODELS:
            every_caller_answered_since(time.monotonic())
            stub = next(s for s in stubs_of(server.pid) if s.model == model)
            # the whole model reloads: every stub of it before the crash goes, with its memory
            dead_regions += tuple(
                r for s in stubs_of(server.pid) if s.model == model for r in s.regions
            )
            crash = recovery.segfault_and_wait(server, model)
            recovery_s[model] = crash["ready_after_s"]
            assert crash["unready_after_s"] is not None, f"readiness stayed true after {model} died"
            assert crash["ready_after_s"] is not None, f"{model} was not restored within 120 s"
            assert server.is_ready()
            assert death(stub) in (None, "gone", "killed by SIGSEGV")
    finally:
        stop.set()
        for thread in callers:
            thread.join()
    print("time to recovery per model (s):", recovery_s)
    # a stub of a reloaded model's old generation does not outlive the reload's grace
    time.sleep(LEFTOVER_GRACE_S + 1.0)
    assert {m: sum(s.model == m for s in stubs_of(server.pid)) for m in MODELS} == instances
    # the crashed stubs' shared memory is not left in /dev/shm for good
    assert dead_regions and [r for r in dead_regions if Path("/dev/shm", r).exists()] == []
    text = log.read_text()
    crash_line = r"died \(killed by SIGSEGV\) while (idle|working on requests? '[0-9a-f]{16}')"
    for model in MODELS:
        assert re.search(rf"{crash_line}.*; reloading model '{model}'", text), model
    # the one refusal allowed: a request that was inside preprocess when it crashed (quarantined)
    quarantined = set(re.findall(r"'([0-9a-f]{16})'(?=[^;]*\(quarantined)", text))
    lost = [f for f in failures if not (f.request_id in quarantined and _refused_as_crashed(f))]
    assert lost == [], f"{len(lost)} requests lost: {[str(f) for f in lost[:3]]}"
    assert len(answers) > 10 and max(answers) - min(answers) < 1e-5  # batch composition: ulps
    assert len(server.supervisor.recoveries) == len(MODELS)


def _refused_as_crashed(error: AlnClientError) -> bool:
    return isinstance(error, InvalidInputError) and "was being decoded when model instance" in str(
        error
    )


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


def test_the_crash_line_names_the_request_inside_and_that_request_is_quarantined(
    supervised, study, monkeypatch
):
    """The log says which request a crashed stub was on (the SDK's random id, nothing about the
    patient), and that request is refused when sent again instead of being decoded again."""
    from aln.client import _request

    server, url, log = supervised
    sent: list[str] = []
    new_id = _request.new_request_id

    def recorded() -> str:
        sent.append(new_id())
        return sent[-1]

    monkeypatch.setattr(_request, "new_request_id", recorded)
    image = ImageInput(study.dicom, lesion=study.lesion_centre)
    failures: list[AlnClientError] = []
    stop = threading.Event()

    def caller() -> None:
        with AlnClient(url, timeout_s=90) as client:
            while not stop.is_set():
                try:
                    client.predict(image, study.clinical)
                except AlnClientError as exc:
                    failures.append(exc)

    callers = [threading.Thread(target=caller) for _ in range(2)]
    for thread in callers:
        thread.start()
    try:
        # caught inside OpenJPEG: its scratch file exists (the crash leaves it behind)
        caught = recovery.stop_while_working(
            server, contract.PREPROCESS, timeout_s=60, also=lambda s: bool(decode.scratch_of(s.pid))
        )
        assert caught is not None, "no preprocess instance was seen decoding within 60 s"
        stub, ids = caught
        os.kill(stub.pid, signal.SIGSEGV)
        os.kill(stub.pid, signal.SIGCONT)
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and "reloaded in" not in log.read_text().split(stub.instance)[-1]
        ):
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in callers:
            thread.join()
    assert decode.scratch_of(stub.pid) == []  # a scratch file the crash left is removed
    named = ", ".join(f"'{i}'" for i in ids)
    line = [t for t in log.read_text().splitlines() if f"'{stub.instance}' died" in t][-1]
    assert f"died (killed by SIGSEGV) while working on request {named} (quarantined" in line, line
    assert set(ids) <= set(sent)  # the callers' own ids, and nothing about the study
    # the request inside the crash is refused when the SDK sends it again, naming the crash;
    # it is the only one (preprocess decodes one study at a time)
    assert [f.request_id for f in failures] == ids, [str(f) for f in failures]
    assert _refused_as_crashed(failures[0]) and f"'{stub.instance}' died" in str(failures[0])
    patient = pydicom.dcmread(io.BytesIO(study.dicom), stop_before_pixels=True)
    assert str(patient.PatientID) not in log.read_text()
    assert str(patient.PatientName) not in log.read_text()


def test_the_server_and_its_stubs_run_with_the_marker_folder(supervised):
    from aln.serving import inflight

    server, _, _ = supervised
    for pid in [server.pid, *(s.pid for s in stubs_of(server.pid))]:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environ = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
        assert environ[inflight.FOLDER_VARIABLE] == str(server.inflight_folder), pid
