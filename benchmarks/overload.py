"""Overload, shedding and recovery of the served ensemble, driven open-loop.

Run: ``aln bench overload [--duration-s 60] [--factor 3]``. Builds the demo repository with
bounded queueing (``--queue-timeout-s``, optionally ``--max-queue-size``), measures capacity after
a warm-up (closed loop at ``--capacity-concurrency``, by default 8: where ``aln bench compare``
finds the ensemble at its peak), then offers ``--factor`` x capacity for ``--duration-s`` seconds
at a fixed arrival rate whatever the server does (open loop: arrivals do not wait for answers),
without client retries. Reports admitted throughput and latency percentiles, how many requests
were refused and how fast, the server's resident memory (all its processes) over the run, and the
latency of normal requests once the load stops.
Writes ``benchmarks/results/overload-<machine>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aln.benchmarks import servers
from aln.benchmarks.latency import NO_RETRY, closed_loop, percentiles
from aln.benchmarks.machine import describe_machine, write_result
from aln.benchmarks.processes import server_rss_mb
from aln.benchmarks.workload import Workload
from aln.client import AlnClientError, AsyncAlnClient, ImageInput, Study
from aln.model.backbones import DEFAULT_BACKBONE
from aln.synthetic.mammogram import synth_case


@dataclass
class LoadResult:
    """What an open-loop run saw."""

    offered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    refused_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    rss_mb: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts, rates and percentiles."""
        return {
            "offered": self.offered,
            "offered_per_s": round(self.offered / self.elapsed_s, 2),
            "admitted": len(self.latencies_ms),
            "admitted_per_s": round(len(self.latencies_ms) / self.elapsed_s, 2),
            "admitted_latency_ms": percentiles(self.latencies_ms, (50, 90, 99, 100)),
            "refused": len(self.refused_ms),
            "refused_latency_ms": percentiles(self.refused_ms, (50, 99)),
            "errors": dict(self.errors),
            "server_rss_mb": {
                "min": min(self.rss_mb, default=None),
                "max": max(self.rss_mb, default=None),
            },
        }


async def open_loop(
    url: str,
    image: ImageInput,
    clinical: dict[str, Any],
    rate_per_s: float,
    duration_s: float,
    timeout_s: float,
    server_pid: int | None = None,
) -> LoadResult:
    """Offer ``rate_per_s`` requests per second for ``duration_s`` without waiting for answers."""
    result = LoadResult()

    async with AsyncAlnClient(url, timeout_s=timeout_s, retry=NO_RETRY) as client:

        async def one() -> None:
            start = time.perf_counter()
            try:
                await client.predict(image, clinical)
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
            except AlnClientError as exc:
                if exc.status in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
                    result.refused_ms.append((time.perf_counter() - start) * 1000)
                result.errors[f"{type(exc).__name__}:{exc.status}"] += 1

        async def sample_memory() -> None:
            while server_pid is not None:
                result.rss_mb.append(server_rss_mb(server_pid))
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample_memory())
        tasks = []
        start = time.perf_counter()
        while (now := time.perf_counter() - start) < duration_s:
            due = int(now * rate_per_s) + 1 - result.offered
            for _ in range(max(due, 0)):
                tasks.append(asyncio.create_task(one()))
                result.offered += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        result.elapsed_s = duration_s
        sampler.cancel()
    return result


async def closed_loop_capacity(
    url: str, image: ImageInput, clinical: dict[str, Any], concurrency: int, duration_s: float
) -> float:
    """Studies per second with ``concurrency`` requests always in flight."""
    one_study = Workload([Study(image, clinical)])
    tally = await closed_loop(url, one_study, concurrency, duration_s)
    return float(tally.summary()["throughput_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=60)
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--max-queue-size", type=int, default=0)
    parser.add_argument("--queue-timeout-s", type=float, default=2.0)
    parser.add_argument(
        "--capacity-concurrency",
        type=int,
        default=8,
        help="closed-loop concurrency capacity is measured at (the compare's peak)",
    )
    parser.add_argument("--capacity-s", type=float, default=20.0, help="capacity window")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="before measuring capacity")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    case = synth_case(np.random.default_rng(1), "hologic", "jpeg2000", laterality="L", view="CC")
    image = ImageInput(case.dicom, case.lesion_centre)
    spec = {
        "max_queue_size": args.max_queue_size,
        "queue_timeout_us": int(args.queue_timeout_s * 1e6),
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        checkpoint = servers.demo_checkpoint(work, args.backbone)
        with servers.ensemble(checkpoint, work, spec) as served:
            url, pid = served.url, served.pid
            idle_rss = server_rss_mb(pid)
            level = args.capacity_concurrency
            asyncio.run(closed_loop_capacity(url, image, case.clinical, level, args.warmup_s))
            capacity = asyncio.run(
                closed_loop_capacity(url, image, case.clinical, level, args.capacity_s)
            )
            print(f"capacity {capacity:.2f} studies/s; offering {args.factor:.0f}x", flush=True)
            overload = asyncio.run(
                open_loop(
                    url, image, case.clinical, capacity * args.factor, args.duration_s, 30.0, pid
                )
            )
            print(json.dumps(overload.summary(), indent=2), flush=True)
            time.sleep(args.queue_timeout_s + 1)
            after = asyncio.run(open_loop(url, image, case.clinical, capacity * 0.5, 10, 30.0, pid))
            built = served.spec
    machine = describe_machine()
    report = {
        "benchmark": "overload",
        "backbone": args.backbone,
        "study": "4096x3328 Hologic JPEG 2000",
        "repository": built.__dict__,
        "capacity_studies_per_s": round(capacity, 2),
        "capacity": {
            "concurrency": args.capacity_concurrency,
            "window_s": args.capacity_s,
            "warmup_s": args.warmup_s,
        },
        "factor": args.factor,
        "duration_s": args.duration_s,
        "idle_server_rss_mb": idle_rss,
        "overload": overload.summary(),
        "after_at_half_capacity": after.summary(),
        "machine": machine,
    }
    out = write_result(report, "overload", args.out)
    print(f"after: {json.dumps(after.summary())}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
