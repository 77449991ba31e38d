"""Failover: one replica killed under load behind the gRPC balancer, as the callers see it.

``aln bench failover [--callers 3] [--before-s 10] [--after-s 15] [--runs 3]`` serves the demo
repository twice (two replicas on this machine) behind nginx (:mod:`aln.deploy.balancer`), drives
closed-loop SDK callers through it with the SDK's own retries (as a hospital integration runs),
then kills one replica with SIGKILL: no drain, the calls in flight on it are cut. Every request is
recorded (its start relative to the kill, its latency, its error); the result gives, per run and
pooled, the p50 and p99 before the kill, the p99 and the largest latency of the requests started
in the failover window (one second before the kill to three after), and the requests lost (an
error reached the caller). The killed replica is restarted between runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers, workload
from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.client import AlnClient, Study

WINDOW_S = (-1.0, 3.0)
"""The failover window: requests started this long before and after the kill."""


@dataclass
class FailoverRecord:
    """Every request of a run: ``(start relative to the kill, seconds, error or "")``."""

    requests: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def lost(self) -> list[tuple[float, float, str]]:
        """The requests whose caller saw an error."""
        return [r for r in self.requests if r[2]]

    def window(self) -> list[float]:
        """Latencies (ms) of the requests started in the failover window that succeeded."""
        low, high = WINDOW_S
        return [s * 1000 for start, s, error in self.requests if low <= start <= high and not error]

    def steady(self) -> list[float]:
        """Latencies (ms) of the requests that finished before the failover window."""
        return [s * 1000 for start, s, error in self.requests if start + s < WINDOW_S[0]]

    def summary(self) -> dict[str, Any]:
        """Counts and percentiles, before the kill and in the failover window."""
        window = self.window()
        return {
            "requests": len(self.requests),
            "lost": len(self.lost),
            "lost_errors": sorted({error for *_, error in self.lost})[:5],
            "before_kill_ms": latency.percentiles(self.steady(), (50, 99)),
            "failover_requests": len(window),
            "failover_ms": latency.percentiles(window, (50, 99, 100)),
        }


def drive_through_kill(
    url: str,
    study: Study,
    kill: Callable[[], None],
    *,
    callers: int = 3,
    before_s: float = 4.0,
    after_s: float = 8.0,
    timeout_s: float = 60.0,
) -> FailoverRecord:
    """Closed-loop SDK callers (default retries) through ``url``; ``kill()`` after ``before_s``.

    Returns once every caller has finished its last request, ``after_s`` after the kill.
    """
    record = FailoverRecord()
    started: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def caller() -> None:
        with AlnClient(url, timeout_s=timeout_s) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
                    error = ""
                except Exception as exc:  # every failure is what the caller saw: record it
                    error = f"{type(exc).__name__}: {exc}"
                started.append((start, time.monotonic() - start, error))

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    time.sleep(before_s)
    killed_at = time.monotonic()
    kill()
    time.sleep(after_s)
    stop.set()
    for thread in threads:
        thread.join(timeout_s * 2)
    record.requests = [(start - killed_at, s, error) for start, s, error in started]
    return record


def pooled(records: list[FailoverRecord]) -> FailoverRecord:
    """Several runs as one record (for percentiles over all of them)."""
    return FailoverRecord([r for record in records for r in record.requests])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench failover", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument("--callers", type=int, default=3, help="closed-loop SDK callers")
    parser.add_argument("--before-s", type=float, default=10.0, help="load before the kill")
    parser.add_argument("--after-s", type=float, default=15.0, help="load after the kill")
    parser.add_argument("--runs", type=int, default=3, help="kills, the replica restarted between")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from aln.deploy.balancer import GrpcBalancer
    from aln.preprocessing import contract
    from aln.serving.server import EmbeddedServer, ServerConfig, free_port

    studies = workload.synthetic(("explicit",), per_syntax=1)
    study = studies.studies[0]
    records = []
    with servers.workdir(args) as work:
        repo = servers.demo_repository(args, work)

        def replica(grpc_port: int) -> EmbeddedServer:
            config = ServerConfig.on_free_ports(repo, grpc_port=grpc_port)
            server = EmbeddedServer(config, log=work / f"replica-{grpc_port}.log").start()
            server.wait_until_ready(contract.ENSEMBLE, timeout_s=300)
            return server

        ports = [free_port(), free_port()]
        survivor, victim = replica(ports[0]), replica(ports[1])
        try:
            urls = [f"127.0.0.1:{port}" for port in ports]
            with GrpcBalancer(urls, fail_timeout_s=2) as balancer:
                for run in range(args.runs):
                    if run:
                        victim.stop(timeout_s=10)
                        victim = replica(ports[1])
                        time.sleep(3)  # past the balancer's fail_timeout: B is tried again
                    record = drive_through_kill(
                        balancer.url,
                        study,
                        functools.partial(os.kill, victim.pid, signal.SIGKILL),
                        callers=args.callers,
                        before_s=args.before_s,
                        after_s=args.after_s,
                    )
                    records.append(record)
                    print(f"run {run + 1}: {record.summary()}", flush=True)
        finally:
            victim.stop(timeout_s=10)
            survivor.stop(timeout_s=10)
    report = {
        "benchmark": "failover",
        "machine": describe_machine(),
        "versions": versions(),
        "workload": studies.description,
        "settings": {
            "callers": args.callers,
            "before_s": args.before_s,
            "after_s": args.after_s,
            "window_s": list(WINDOW_S),
            "replicas": 2,
            "kill": "SIGKILL to one tritonserver",
            "balancer": "nginx grpc_pass, least_conn, max_fails=1, fail_timeout 2 s",
        },
        "runs": [record.summary() for record in records],
        "pooled": pooled(records).summary(),
    }
    out = write_result(report, "failover", args.out)
    print(f"pooled: {report['pooled']}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
