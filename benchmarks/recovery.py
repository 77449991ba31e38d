"""Recovery: a crashed Python-backend stub of each model under load, the time until it serves again.

``aln bench recovery [--callers 3] [--rounds 2]`` serves the demo repository as ``aln serve`` does
(the stub supervisor on), drives closed-loop SDK callers (default retries), and sends SIGSEGV (the
stand-in for a native decoder crashing on a hostile file) to one stub of each Python-backend model
in turn. Per crash it records how long readiness took to turn false (detection) and to come back
(time to recovery), and the supervisor's own reload time; over the run, the requests lost (an
error reached a caller), and the latency of the requests started while a model was down against
that of the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers, workload
from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.client import AlnClient, AlnClientError
from aln.preprocessing import contract
from aln.serving import inflight
from aln.serving.server import EmbeddedServer
from aln.serving.supervisor import Stub, proc_stat, stubs_of

MODELS = (
    contract.PREPROCESS,
    contract.BACKBONE_PRIMARY,
    contract.BACKBONE_AUXILIARY,
    contract.FUSION_HEAD,
)
"""The Python-backend models whose stubs can crash (the ensemble has none)."""


def segfault_and_wait(
    server: EmbeddedServer, model: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    """SIGSEGV to one stub of ``model``; wait until readiness turned false and came back.

    Returns:
        ``{"model", "stubs_running", "unready_after_s", "ready_after_s"}``: the model's stubs
        alive before the signal, and seconds from the signal until
        readiness was seen false (None if never) and until it was true again (None if not within
        ``timeout_s``).
    """
    running = [s for s in stubs_of(server.pid) if s.model == model]
    # the newest: a stub of the generation before a reload may still be alive (and ignored)
    stub = max(running, key=lambda s: int((proc_stat(s.pid) or ["0"] * 20)[19]))
    killed = time.monotonic()
    os.kill(stub.pid, signal.SIGSEGV)
    unready: float | None = None
    ready: float | None = None
    while time.monotonic() - killed < timeout_s:
        if not server.is_ready():
            unready = unready if unready is not None else time.monotonic() - killed
        elif unready is not None:
            ready = time.monotonic() - killed
            break
        time.sleep(0.02)
    return {
        "model": model,
        "stubs_running": len(running),
        "unready_after_s": None if unready is None else round(unready, 3),
        "ready_after_s": None if ready is None else round(ready, 3),
    }


def stop_while_working(
    server: EmbeddedServer,
    model: str,
    timeout_s: float = 60.0,
    also: Callable[[Stub], bool] = lambda stub: True,
) -> tuple[Stub, list[str]] | None:
    """Freeze (SIGSTOP) a stub of ``model`` caught working on a request, for a crash on cue.

    Watches the instances' markers (:mod:`aln.serving.inflight`; the server must supervise its
    stubs); a stub seen working is stopped and its marker read again, since it may have finished
    in between, or fail ``also`` (then it is let go and the watch goes on).

    Returns:
        ``(stub, request ids it is working on)`` with the stub stopped (the caller signals it and
        sends SIGCONT), or None if no stub was seen working within ``timeout_s``.
    """
    if server.inflight_folder is None:
        raise ValueError("The server does not supervise its stubs: it keeps no markers")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for stub in (s for s in stubs_of(server.pid) if s.model == model):
            if not inflight.read(server.inflight_folder, stub.instance):
                continue
            os.kill(stub.pid, signal.SIGSTOP)
            ids = inflight.read(server.inflight_folder, stub.instance)
            if ids and also(stub):
                return stub, ids
            os.kill(stub.pid, signal.SIGCONT)
        time.sleep(0.001)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench recovery", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument("--callers", type=int, default=3, help="closed-loop SDK callers")
    parser.add_argument("--rounds", type=int, default=2, help="crashes per model")
    parser.add_argument("--settle-s", type=float, default=3.0, help="load between crashes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from aln.serving.server import ServerConfig

    study = workload.synthetic(("explicit",), per_syntax=1).studies[0]
    crashes: list[dict[str, Any]] = []
    requests: list[tuple[float, float, str]] = []  # (start, seconds, error or "")
    stop = threading.Event()

    def caller(url: str) -> None:
        with AlnClient(url, timeout_s=120) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    client.predict(study.primary, study.clinical)
                    error = ""
                except AlnClientError as exc:
                    error = f"{exc.status}: {exc}"
                requests.append((start, time.monotonic() - start, error))

    with servers.workdir(args) as work:
        repo = servers.demo_repository(args, work)
        config = ServerConfig.on_free_ports(repo, supervise_stubs=True)
        with EmbeddedServer(config, log=work / "tritonserver.log") as server:
            server.wait_until_ready(contract.ENSEMBLE, timeout_s=300)
            url = f"127.0.0.1:{config.grpc_port}"
            threads = [threading.Thread(target=caller, args=(url,)) for _ in range(args.callers)]
            for thread in threads:
                thread.start()
            try:
                for _ in range(args.rounds):
                    for model in MODELS:
                        time.sleep(args.settle_s)
                        crash = {"at": time.monotonic(), **segfault_and_wait(server, model)}
                        crashes.append(crash)
                        print(f"{model}: {crash}", flush=True)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            reloads = list(server.supervisor.recoveries) if server.supervisor else []

    def while_down(start: float) -> bool:
        return any(c["at"] <= start <= c["at"] + (c["ready_after_s"] or 0) for c in crashes)

    down = [s * 1000 for start, s, _ in requests if while_down(start)]
    up = [s * 1000 for start, s, error in requests if not error and not while_down(start)]
    lost = [error for *_, error in requests if error]
    report = {
        "benchmark": "recovery",
        "machine": describe_machine(),
        "versions": versions(),
        "workload": {"studies": "one explicit VR study", "callers": args.callers},
        "settings": {"rounds": args.rounds, "settle_s": args.settle_s, "signal": "SIGSEGV"},
        "crashes": [{k: v for k, v in c.items() if k != "at"} for c in crashes],
        "supervisor_reloads": reloads,
        "requests": len(requests),
        "lost": len(lost),
        "lost_errors": sorted(set(lost))[:5],
        "while_down_requests": len(down),
        "while_down_ms": latency.percentiles(down, (50, 99, 100)),
        "other_requests": len(up),
        "other_ms": latency.percentiles(up, (50, 99)),
    }
    out = write_result(report, "recovery", args.out)
    print(f"lost {len(lost)} of {len(requests)}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
