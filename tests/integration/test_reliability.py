"""Overload, faults, restarts and deadlines against the real server.

Each test starts its own server whose queues shed by time (1 s); the overload test is a short
version of ``aln bench overload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aln.benchmarks.overload import closed_loop_capacity, open_loop
from aln.client import AlnClient, ImageInput, Prediction, RetryPolicy
from aln.export.repository import build_repository
from aln.preprocessing import contract
from aln.serving.server import EmbeddedServer, ServerConfig

QUEUE_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def bounded_repo(served, tmp_path_factory):
    repo, _ = build_repository(
        served[1],
        tmp_path_factory.mktemp("bounded") / "repo",
        {"queue_timeout_us": int(QUEUE_TIMEOUT_S * 1e6), "max_batch": 4},
    )
    return repo


def _start(repo, tmp_path, config=None):
    config = config or ServerConfig.on_free_ports(repo)
    server = EmbeddedServer(config, log=tmp_path / f"server-{time.monotonic_ns()}.log").start()
    return server, config


@contextlib.contextmanager
def _ready(repo, tmp_path):
    """``(server, url)`` of a fresh server on ``repo``, ready; stopped afterwards."""
    server, config = _start(repo, tmp_path)
    try:
        server.wait_until_ready(contract.ENSEMBLE, timeout_s=180)
        yield server, f"127.0.0.1:{config.grpc_port}"
    finally:
        server.stop()


def test_overload_is_shed_promptly_and_the_server_recovers(bounded_repo, study, tmp_path):
    with _ready(bounded_repo, tmp_path) as (server, url):
        image = ImageInput(study.dicom, study.lesion_centre)
        capacity = asyncio.run(closed_loop_capacity(url, image, study.clinical, 2, 4))
        result = asyncio.run(
            open_loop(url, image, study.clinical, 3 * capacity, 10, 30, server.process.pid)
        )
        summary = result.summary()
        assert summary["refused"] > 0, summary  # excess load is refused, not queued without bound
        # goodput holds near capacity while the excess is shed
        assert summary["admitted_per_s"] > 0.5 * capacity, (capacity, summary)
        # admitted requests wait at most the queue timeout in each queued step, plus service time
        assert summary["admitted_latency_ms"]["p99"] < 1000 * (4 * QUEUE_TIMEOUT_S + 3), summary
        assert max(result.rss_mb) < 4 * 1024
        time.sleep(QUEUE_TIMEOUT_S + 0.5)
        after = asyncio.run(
            open_loop(url, image, study.clinical, capacity / 2, 4, 30, server.process.pid)
        )
        assert after.summary()["refused"] == 0 and len(after.latencies_ms) == after.offered, (
            after.summary()
        )


def test_killed_and_restarted_server_loses_no_request(bounded_repo, served, make_case, tmp_path):
    """SIGKILL with requests in flight, restart: every distinct study answered with its own answer."""
    from aln.model.reference import ReferencePredictor
    from aln.preprocessing import Region, StudyInput

    cases = [make_case("ge", "explicit", seed=200 + i) for i in range(10)]
    reference = ReferencePredictor(served[1])
    expected = [
        reference.predict(StudyInput(c.dicom, Region(*c.lesion_centre)), c.clinical).probability
        for c in cases
    ]
    assert len({round(p, 6) for p in expected}) == len(cases)  # distinct studies, distinct answers
    server, config = _start(bounded_repo, tmp_path)
    server.wait_until_ready(contract.ENSEMBLE, timeout_s=180)
    url = f"127.0.0.1:{config.grpc_port}"
    retry = RetryPolicy(max_attempts=60, initial_backoff_s=0.2, max_backoff_s=1.0)
    spans: dict[int, tuple[float, float]] = {}
    answers: dict[int, object] = {}

    def one(i: int, client: AlnClient) -> None:
        start = time.monotonic()
        try:
            answers[i] = client.predict(
                ImageInput(cases[i].dicom, cases[i].lesion_centre), cases[i].clinical
            )
        except Exception as exc:  # reported below with the study's index
            answers[i] = exc
        spans[i] = (start, time.monotonic())

    restarted = None
    with AlnClient(url, timeout_s=150, retry=retry) as client, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(one, i, client) for i in range(len(cases))]
        try:
            while len(answers) < 2:  # the server is answering, and more are in flight
                time.sleep(0.05)
            killed_at = time.monotonic()
            os.killpg(server.process.pid, signal.SIGKILL)  # a crash, mid-load
            server.process.wait()
            restarted, _ = _start(bounded_repo, tmp_path, config)
            probes = []
            while not restarted.is_ready(contract.ENSEMBLE):
                assert restarted.process.poll() is None, "the restarted server died"
                probes.append(time.monotonic())
                time.sleep(0.1)
            ready_at = time.monotonic()
            for future in futures:
                future.result(timeout=180)
        finally:
            if restarted is not None and any(not f.done() for f in futures):
                restarted.stop()
    try:
        assert len(probes) >= 5, probes  # readiness was polled, and false, while models loaded
        in_flight = [i for i, (s, e) in spans.items() if s < killed_at < e]
        assert in_flight, spans  # requests were in flight at the kill ...
        assert any(spans[i][1] > ready_at for i in in_flight)  # ... and answered after restart
        for i, answer in answers.items():
            assert isinstance(answer, Prediction), (i, answer)
            assert abs(answer.probability - expected[i]) <= 1e-4, (i, answer.probability)
        assert len(answers) == len(cases)  # each study answered once, with its own answer
    finally:
        if restarted is not None:
            restarted.stop()
        server.stop()


def test_expired_requests_are_refused_in_queues_and_never_answered_late(
    bounded_repo, study, tmp_path
):
    """A deadline shorter than preprocessing itself (10 ms, about 100 ms of work).

    No answer may come back as a success: each is refused in a queue or discarded as late. Triton
    2.51 restarts the timeout in each composing model's queue, so a request that finds the
    backbone idle still runs on it; the ones that wait in a queue past their deadline never do.
    Triton's own statistics must show the backbone ran fewer requests than were offered, and
    the server must answer normally afterwards.
    """
    import tritonclient.grpc as grpcclient

    with _ready(bounded_repo, tmp_path) as (_, url):
        image = ImageInput(study.dicom, study.lesion_centre)
        with grpcclient.InferenceServerClient(url) as raw:
            before = _executions(raw)
        result = asyncio.run(open_loop(url, image, study.clinical, 20, 3, 0.01))
        with grpcclient.InferenceServerClient(url) as raw:
            after = _executions(raw)
        assert result.offered >= 50 and not result.latencies_ms  # none answered in time
        assert after - before < result.offered, (after - before, result.offered)
        # and the server still answers a request with time to spare
        with AlnClient(url, timeout_s=60) as client:
            assert client.predict(image, study.clinical).probability > 0


def _executions(raw) -> int:
    stats = raw.get_inference_statistics(contract.BACKBONE_PRIMARY, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))
