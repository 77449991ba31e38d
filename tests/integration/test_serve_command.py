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
