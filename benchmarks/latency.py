"""Latency sweep: throughput and latency percentiles of a running server at several concurrencies.

``aln bench latency --url HOST:PORT --concurrency 1,2,4,8,16 --duration-s 30`` drives the server
through the asyncio client SDK, closed loop: at each concurrency ``c``, ``c`` workers send studies
back to back. A warm-up period at the same concurrency comes first and is not recorded. Each
level records throughput, latency percentiles, errors by kind and, when the server is Triton,
Triton's own per-model statistics for the measured window (queue and compute time per composing
model, batch sizes formed). The result names the machine, the versions and the served
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from aln.benchmarks import servers, triton_stats, workload
from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.benchmarks.plots import plot_sweeps
from aln.benchmarks.workload import Workload
from aln.client import AlnClient, AlnClientError, AsyncAlnClient, RetryPolicy
from aln.preprocessing import contract

PERCENTILES = (50, 90, 95, 99)
NO_RETRY = RetryPolicy(max_attempts=1)
"""Benchmarks count every refusal; the SDK's retries would hide them."""


def percentiles(values: list[float], qs: tuple[int, ...]) -> dict[str, float | None]:
    """``{"p50": ..., "max": ...}`` (q = 100 is named ``max``), ms to 0.1; None without values."""
    return {
        "max" if q == 100 else f"p{q}": round(float(np.percentile(values, q)), 1)
        if values
        else None
        for q in qs
    }


@dataclass
class Tally:
    """Latencies of successful requests and failures by kind, over one window."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_start: float = math.inf
    last_end: float = -math.inf

    def record(self, start: float, end: float, error: AlnClientError | None) -> None:
        """Count one finished request."""
        if error is None:
            self.latencies_ms.append((end - start) * 1000)
        else:
            self.errors[error.status or type(error).__name__] += 1
        self.first_start = min(self.first_start, start)
        self.last_end = max(self.last_end, end)

    def summary(self) -> dict[str, Any]:
        """Counts, throughput (successes per second of the window) and latency percentiles."""
        elapsed = max(self.last_end - self.first_start, 0.0) if self.last_end > 0 else 0.0
        values = self.latencies_ms
        return {
            "requests": len(values) + sum(self.errors.values()),
            "ok": len(values),
            "errors": dict(self.errors),
            "elapsed_s": round(elapsed, 2),
            "throughput_per_s": round(len(values) / elapsed, 3) if elapsed else 0.0,
            "latency_ms": percentiles(values, (*PERCENTILES, 100)) if values else None,
        }


async def drive(
    client: AsyncAlnClient,
    workload: Workload,
    concurrency: int,
    duration_s: float,
    timeout_s: float,
    offset: int = 0,
) -> Tally:
    """Closed loop: ``concurrency`` workers send back to back until ``duration_s`` has passed.

    Requests started before the end run to completion and count.
    """
    tally = Tally()
    stop = time.perf_counter() + duration_s
    counter = iter(range(offset, 1 << 62))

    async def worker() -> None:
        while time.perf_counter() < stop:
            study = workload.study(next(counter))
            start = time.perf_counter()
            error = None
            try:
                await client.predict(
                    study.primary, study.clinical, auxiliary=study.auxiliary, timeout_s=timeout_s
                )
            except AlnClientError as exc:
                error = exc
            tally.record(start, time.perf_counter(), error)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


async def closed_loop(
    url: str,
    workload: Workload,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 120.0,
    *,
    shared_memory: bool = False,
) -> Tally:
    """:func:`drive` on a client of its own (no retries), closed when the window ends."""
    async with AsyncAlnClient(
        url, retry=NO_RETRY, timeout_s=timeout_s, shared_memory=shared_memory
    ) as client:
        return await drive(client, workload, concurrency, duration_s, timeout_s)


async def _level(
    url: str,
    workload: Workload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
    triton: bool,
    shared_memory: bool,
) -> dict[str, Any]:
    async with AsyncAlnClient(
        url, retry=NO_RETRY, timeout_s=timeout_s, shared_memory=shared_memory
    ) as client:
        if warmup_s > 0:
            await drive(client, workload, concurrency, warmup_s, timeout_s)
        before = triton_stats.snapshot(url) if triton else {}
        tally = await drive(client, workload, concurrency, duration_s, timeout_s, offset=7)
        after = triton_stats.snapshot(url) if triton else {}
    row = {"concurrency": concurrency, **tally.summary()}
    if triton:
        row["triton"] = triton_stats.window(before, after)
    return row


def is_triton(url: str) -> bool:
    """Whether the server answers Triton's statistics extension (the baseline does not)."""
    try:
        triton_stats.snapshot(url)
    except Exception:  # any failure means "no statistics here", never a reason to stop
        return False
    return True


def sweep(
    url: str,
    workload: Workload,
    concurrencies: list[int],
    *,
    duration_s: float = 30.0,
    warmup_s: float = 5.0,
    timeout_s: float = 60.0,
    label: str = "aln_ensemble",
    log: Any = None,
    ready_timeout_s: float = 30.0,
    shared_memory: bool = False,
) -> dict[str, Any]:
    """Measure each concurrency in turn; return the result document (JSON-ready).

    Args:
        url: gRPC ``host:port`` of a server speaking the ensemble's contract.
        workload: The studies sent (in turn).
        concurrencies: Levels to measure.
        duration_s: Measured window per level.
        warmup_s: Unrecorded warm-up per level.
        timeout_s: Per-request deadline.
        label: What is being measured (``aln_ensemble``, ``baseline``, a configuration name).
        log: Called with a one-line summary after each level (e.g. ``print``).
        ready_timeout_s: How long to wait for the server to be ready before measuring.
        shared_memory: Send the DICOM bytes through Triton system shared memory (the load
            generator on the server's host).

    Raises:
        ModelUnavailableError: The server or the ensemble is not ready in ``ready_timeout_s``.
    """
    with AlnClient(url) as client:
        client.wait_until_ready(timeout_s=ready_timeout_s)
    triton = is_triton(url)
    levels = []
    for concurrency in concurrencies:
        row = asyncio.run(
            _level(
                url, workload, concurrency, duration_s, warmup_s, timeout_s, triton, shared_memory
            )
        )
        levels.append(row)
        if log is not None:
            log(format_level(label, row))
    configs = {}
    if triton:
        models = list(triton_stats.snapshot(url))
        configs = triton_stats.repository_configs(url, models)
    return {
        "benchmark": "latency",
        "label": label,
        "machine": describe_machine(),
        "versions": versions(url if triton else None),
        "workload": workload.description,
        "settings": {
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "timeout_s": timeout_s,
            "model": contract.ENSEMBLE,
            "shared_memory": shared_memory,
        },
        "repository": configs,
        "levels": levels,
    }


def format_level(label: str, row: dict[str, Any]) -> str:
    """One line: label, concurrency, throughput, p50/p99, errors."""
    latency = row["latency_ms"] or {}
    errors = ", ".join(f"{k} {v}" for k, v in row["errors"].items()) or "none"
    return (
        f"{label:<14} c={row['concurrency']:<3} {row['throughput_per_s']:7.2f}/s  "
        f"p50 {latency.get('p50', math.nan):8.1f} ms  "
        f"p99 {latency.get('p99', math.nan):8.1f} ms  errors: {errors}"
    )


def concurrency_list(text: str) -> list[int]:
    """Parse ``1,2,4,8``; every level must be a positive integer."""
    try:
        levels = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of integers"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be at least 1, got '{text}'")
    return levels


def add_timing_arguments(parser: argparse.ArgumentParser, duration_s: float = 30.0) -> None:
    """Measured window, warm-up and request deadline (:func:`sweep_settings` reads them)."""
    parser.add_argument("--duration-s", type=float, default=duration_s, help="measured per level")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="unrecorded, per level")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per-request deadline")


def add_sweep_arguments(parser: argparse.ArgumentParser, default: str = "1,2,4,8,16") -> None:
    """Concurrency levels and timing of a sweep."""
    parser.add_argument("--concurrency", type=concurrency_list, default=concurrency_list(default))
    add_timing_arguments(parser)


class SweepSettings(TypedDict):
    """Timing of a sweep: measured window, warm-up and request deadline per level (seconds)."""

    duration_s: float
    warmup_s: float
    timeout_s: float


def sweep_settings(args: argparse.Namespace) -> SweepSettings:
    """The keyword arguments of :func:`sweep` that :func:`add_sweep_arguments` parsed."""
    return SweepSettings(
        duration_s=args.duration_s, warmup_s=args.warmup_s, timeout_s=args.timeout_s
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench latency", description=__doc__.splitlines()[0])
    servers.add_arguments(parser)
    workload.add_arguments(parser)
    add_sweep_arguments(parser)
    parser.add_argument("--label", default="aln_ensemble", help="name of what is measured")
    parser.add_argument(
        "--shared-memory",
        action="store_true",
        help="send the DICOM bytes through Triton system shared memory (same host only)",
    )
    parser.add_argument("--out", type=Path, help="result JSON (PNG written beside it)")
    args = parser.parse_args(argv)
    studies = workload.from_arguments(args)
    latency_settings = sweep_settings(args)
    with servers.target(args) as url:
        report = sweep(
            url,
            studies,
            args.concurrency,
            label=args.label,
            **latency_settings,
            log=print,
            shared_memory=args.shared_memory,
        )
    out = write_result(report, f"latency-{args.label}", args.out)
    plot_sweeps([report], out.with_suffix(".png"), f"{args.label}: {studies.summary()}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
