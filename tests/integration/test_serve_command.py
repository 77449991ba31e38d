"""``aln serve`` as an operator runs it: ready line with the endpoints, a stop that drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from aln.client import AlnClient, AlnClientError, ImageInput, RetryPolicy
from aln.serving.server import DEFAULT_ALLOCATOR, allocator_library, free_port
from aln.serving.supervisor import proc_cmdline, proc_stat, stubs_of


def _ready(http: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_serve_prints_endpoints_and_drains_on_sigterm(served, study, tmp_path):
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
        _assert_default_allocator_preloaded(process.pid)
        image = ImageInput(study.dicom, lesion=study.lesion_centre)
        calls: list[tuple[float, float, str]] = []  # (start, end, outcome)
        refused = threading.Event()

        def caller() -> None:
            with AlnClient(f"127.0.0.1:{grpc}", retry=RetryPolicy(max_attempts=1)) as client:
                while not refused.is_set():
                    start = time.monotonic()
                    try:
                        client.predict(image, study.clinical, timeout_s=60)
                        outcome = "ok"
                    except AlnClientError as exc:
                        outcome = exc.status or type(exc).__name__
                        refused.set()
                    calls.append((start, time.monotonic(), outcome))

        callers = [threading.Thread(target=caller) for _ in range(4)]
        for thread in callers:
            thread.start()
        time.sleep(3)  # requests in flight on every caller
        stopped = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        while _ready(http) and time.monotonic() - stopped < 10:
            time.sleep(0.02)
        unready_s = time.monotonic() - stopped
        for thread in callers:
            thread.join(timeout=90)
        status = process.wait(timeout=90)
        rest = process.stdout.read()
        assert status == 0, (status, rest, (tmp_path / "log").read_text()[-3000:])
        assert unready_s < 1.0, f"readiness still true {unready_s:.2f} s after SIGTERM"
        admitted = [c for c in calls if c[0] < stopped - 0.05]
        assert admitted and all(outcome == "ok" for _, _, outcome in admitted), admitted
        late = [c for c in calls if c[0] >= stopped and c[2] != "ok"]
        assert all(end - start < 1.0 for start, end, _ in late), late  # refused promptly
        assert "draining" in rest and "stopping tritonserver..." in rest, rest
    finally:
        if process.poll() is None:
            process.kill()


def _assert_default_allocator_preloaded(serve_pid: int) -> None:
    """tritonserver (the child of ``aln serve``) and every stub run with the default malloc."""
    library = allocator_library(DEFAULT_ALLOCATOR)
    assert library is not None
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    (triton,) = [
        pid
        for pid in children
        if (proc_stat(pid) or ["", ""])[1] == str(serve_pid)
        and (proc_cmdline(pid) or [""])[0].endswith("tritonserver")
    ]
    processes = [triton] + [stub.pid for stub in stubs_of(triton)]
    assert len(processes) > 4
    for pid in processes:
        assert library.name in Path(f"/proc/{pid}/maps").read_text(), pid


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
