"""Two served replicas behind nginx (Debian) as the gRPC balancer: the same answers, locust
through it, a replica killed under load without a lost request, and taken back after a restart.

On 2 cores two replicas share the same CPUs, so nothing here is about speed (the README says so).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aln.benchmarks import failover
from aln.client import AlnClient, ImageInput, Study
from aln.deploy.balancer import GrpcBalancer, nginx_binary
from aln.preprocessing import contract
from aln.serving.server import EmbeddedServer, ServerConfig
from aln.serving.supervisor import proc_stat, shm_regions
from aln.synthetic.mammogram import synth_case

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx comes with make install (Debian nginx)"
)
ROOT = Path(__file__).resolve().parents[2]


def replica(repository: Path, grpc_port: int = 0) -> EmbeddedServer:
    fixed = {"grpc_port": grpc_port} if grpc_port else {}
    config = ServerConfig.on_free_ports(repository, supervise_stubs=True, **fixed)
    server = EmbeddedServer(config).start()
    server.wait_until_ready(contract.ENSEMBLE, timeout_s=240)
    return server


@pytest.fixture(scope="module")
def pair(served):
    """The session's server (A) and a second replica (B) of the same repository, behind nginx."""
    a, _, url_a = served
    b = replica(a.config.repository)
    url_b = f"127.0.0.1:{b.config.grpc_port}"
    with GrpcBalancer([url_a, url_b], fail_timeout_s=2) as balancer:
        yield balancer, url_a, b
    b.stop(timeout_s=10)


def group_of(leader: int) -> list[int]:
    """The live processes of a server's process group (its session); zombies are dead."""
    alive = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat[2] == str(leader) and stat[0] != "Z":
            alive.append(int(entry.name))
    return alive


def study(seed):
    case = synth_case(np.random.default_rng(seed), "hologic", "explicit", shape=(1400, 1150))
    return ImageInput(case.dicom, case.lesion_centre), case.clinical


def test_answers_through_the_balancer_are_those_of_one_server(pair):
    balancer, url_a, _ = pair
    studies = [study(seed) for seed in (61, 62)]
    with AlnClient(url_a, timeout_s=60) as direct, AlnClient(balancer.url, timeout_s=60) as lb:
        alone = [direct.predict(image, record).probability for image, record in studies]
        for _ in range(3):  # each call may land on either replica
            through = [lb.predict(image, record).probability for image, record in studies]
            assert np.allclose(through, alone, atol=1e-6), (through, alone)
    replicas = {tried[-1] for status, tried in balancer.calls() if status == 200}
    assert len(replicas) == 2  # both replicas answered


def test_locust_runs_through_the_balancer_and_bad_studies_keep_their_status(pair, tmp_path):
    """Locust's valid studies all answered; its invalid ones still INVALID_ARGUMENT past nginx."""
    balancer, _, _ = pair
    prefix = tmp_path / "locust"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locustfile.py"),
        "--headless", "--host", balancer.url, "--users", "2", "--spawn-rate", "2",
        "--run-time", "8s", "--stop-timeout", "60", "--csv", str(prefix),
        "--aln-syntaxes", "explicit", "--aln-invalid-share", "0.3", "--only-summary",
    ]  # fmt: skip
    subprocess.run(command, check=False, capture_output=True, timeout=120)
    rows = list(csv.DictReader(Path(f"{prefix}_stats.csv").read_text().splitlines()))
    valid = [r for r in rows if r["Name"].startswith("valid/")]
    assert valid and sum(int(r["Request Count"]) for r in valid) >= 2
    assert all(r["Failure Count"] == "0" for r in valid)
    failures = list(csv.DictReader(Path(f"{prefix}_failures.csv").read_text().splitlines()))
    assert all(
        f["Name"].startswith("invalid/") and "INVALID_ARGUMENT" in f["Error"] for f in failures
    )


def test_a_replica_killed_under_load_loses_no_request_and_returns_after_a_restart(pair):
    balancer, _, b = pair
    image, record = study(63)
    victim: dict[str, list] = {}

    def kill():
        victim["group"] = group_of(b.process.pid)
        victim["regions"] = [r for pid in victim["group"] for r in shm_regions(pid)]
        b.process.kill()  # SIGKILL: no drain, requests in flight on B are cut off

    run = failover.drive_through_kill(balancer.url, Study(image, record), kill, callers=3)
    assert len(victim["group"]) > 1 and victim["regions"]  # tritonserver and its stubs
    assert not run.lost, run.lost[:3]
    summary = run.summary()
    assert summary["failover_requests"] > 0, "no request around the kill"
    print(f"failover: {summary}")
    regions = victim["regions"]
    b.stop(timeout_s=10)
    # the stubs outlive a killed tritonserver; stop() reaps them and unlinks their regions
    assert group_of(b.process.pid) == []
    assert not any((Path("/dev/shm") / r).exists() for r in regions)

    restarted = replica(b.config.repository, b.config.grpc_port)
    try:
        seen = len(balancer.calls())
        time.sleep(2.5)  # the balancer's fail_timeout: B is tried again after it
        with AlnClient(balancer.url, timeout_s=60) as client:
            for _ in range(8):
                client.predict(image, record)
        url_b = f"127.0.0.1:{b.config.grpc_port}"
        after = balancer.calls()[seen:]
        assert any(status == 200 and tried[-1] == url_b for status, tried in after), after
    finally:
        restarted.stop(timeout_s=10)
