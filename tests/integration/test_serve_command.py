"""``aln serve`` as an operator runs it: ready line with the endpoints, clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from aln.serving.server import free_port


def test_serve_prints_endpoints_and_stops_on_sigterm(served, tmp_path):
    repo = served[0].config.repository
    grpc, http, metrics = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aln",
            "serve",
            "--repo",
            str(repo),
            "--grpc-port",
            str(grpc),
            "--http-port",
            str(http),
            "--metrics-port",
            str(metrics),
            "--log",
            str(tmp_path / "log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = []
        for line in process.stdout:  # the ready line comes once the ensemble is loaded
            seen.append(line)
            if "aln_ensemble ready" in line:
                break
        ready = seen[-1] if seen else ""
        assert f"aln_ensemble ready: grpc://127.0.0.1:{grpc}" in ready, seen
        assert f"metrics http://127.0.0.1:{metrics}/metrics" in ready
        os.kill(process.pid, signal.SIGTERM)
        status = process.wait(timeout=90)
        rest = process.stdout.read()
        assert status == 0, (status, rest, (tmp_path / "log").read_text()[-3000:])
        assert "stopping tritonserver" in rest
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_without_repository_says_what_to_do(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "aln", "serve", "--repo", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        result.returncode != 0
        and "run `aln build-repo CHECKPOINT --out DIR` first" in result.stderr
    )


def test_sigterm_drains_admitted_requests_and_refuses_new_ones(served, study, tmp_path):
    """A rolling update's SIGTERM under load: readiness false at once, every request already
    admitted answered, later ones refused promptly with UNAVAILABLE, exit status 0."""
    import threading
    import time
    import urllib.request

    from aln.client import AlnClient, AlnClientError, ImageInput, RetryPolicy

    repo = served[0].config.repository
    grpc, http, metrics = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aln", "serve", "--repo", str(repo), "--grpc-port", str(grpc)]
        + ["--http-port", str(http), "--metrics-port", str(metrics), "--drain-timeout-s", "20"]
        + ["--log", str(tmp_path / "log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    outcomes: list[tuple[float, float, str]] = []
    stop_sending = threading.Event()

    def send() -> None:
        with AlnClient(f"127.0.0.1:{grpc}", timeout_s=60, retry=RetryPolicy(max_attempts=1)) as c:
            while not stop_sending.is_set():
                start = time.monotonic()
                try:
                    c.predict(ImageInput(study.dicom, study.lesion_centre), study.clinical)
                    outcomes.append((start, time.monotonic(), "ok"))
                except AlnClientError as exc:
                    outcomes.append((start, time.monotonic(), exc.status or "local"))
                    time.sleep(0.05)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        for line in process.stdout:
            if "aln_ensemble ready" in line:
                break
        senders = [threading.Thread(target=send) for _ in range(4)]
        for thread in senders:
            thread.start()
        while sum(1 for o in outcomes if o[2] == "ok") < 4:
            time.sleep(0.05)
        terminated_at = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        time.sleep(0.3)
        assert not ready()  # readiness goes false at once
        status = process.wait(timeout=90)
        stop_sending.set()
        for thread in senders:
            thread.join(timeout=60)
        rest = process.stdout.read()
        assert status == 0, (status, rest, (tmp_path / "log").read_text()[-3000:])
        admitted = [o for o in outcomes if o[0] < terminated_at - 0.05]  # sent before it
        assert admitted and all(o[2] == "ok" for o in admitted), admitted  # none lost
        refused = [o for o in outcomes if o[2] != "ok"]
        assert all(o[2] == "UNAVAILABLE" for o in refused), refused
        assert all(end - start < 2.0 for start, end, _ in refused), refused  # promptly
    finally:
        stop_sending.set()
        if process.poll() is None:
            process.kill()
