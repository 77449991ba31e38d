"""Soak: memory, throughput and latency under sustained load at half of measured capacity.

``aln bench soak [--duration-min 30] [--share 0.5] [--sample-s 10]`` starts the demo ensemble,
measures its capacity closed loop, then offers ``--share`` of it open loop (Poisson arrivals) for
the duration: explicit VR, JPEG 2000 and RLE studies in turn, every other one with an auxiliary
image. Every process's resident memory is sampled every ``--sample-s`` seconds (summed per
component: Triton's core, each Python-backend model); throughput and p99 are kept per minute.

Verdict (:func:`verdict`): after the first quarter (warm-up), total resident memory grows less than
1% per 10 minutes over the second half (least-squares slope), and every later minute's throughput
and p99 stay within 10% of the first minute after warm-up. A PNG of memory per component and p99
per minute is written beside the result file.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aln.benchmarks import latency, processes, servers, workload
from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.client import AlnClientError, AsyncAlnClient

SOAK_SYNTAXES = ("explicit", "jpeg2000", "rle")
MEMORY_GROWTH_PER_10_MIN = 0.01
"""Largest accepted growth of total resident memory over the second half, per 10 minutes."""
DRIFT = 0.10
"""Largest accepted change of a minute's throughput or p99 against the first measured minute."""


@dataclass
class SoakRecord:
    """What a soak run saw: every request's completion and every memory sample."""

    completions: list[tuple[float, float | None]] = field(default_factory=list)
    """``(seconds since start, latency ms or None when refused)`` per finished request."""
    memory: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    """``(seconds since start, MB per component)`` per sample."""
    errors: dict[str, int] = field(default_factory=dict)


async def offer(
    url: str,
    studies: workload.Workload,
    rate_per_s: float,
    duration_s: float,
    server_pid: int,
    sample_s: float,
    seed: int = 0,
) -> SoakRecord:
    """Poisson arrivals at ``rate_per_s`` for ``duration_s``; every other study with auxiliary."""
    record = SoakRecord()
    rng = np.random.default_rng(seed)
    start = time.perf_counter()

    async with AsyncAlnClient(url, retry=latency.NO_RETRY, timeout_s=60) as client:

        async def one(i: int) -> None:
            study = studies.study(i)
            auxiliary = study.auxiliary if i % 2 else None
            began = time.perf_counter()
            try:
                await client.predict(study.primary, study.clinical, auxiliary=auxiliary)
                record.completions.append(
                    (time.perf_counter() - start, (time.perf_counter() - began) * 1000)
                )
            except AlnClientError as exc:
                key = exc.status or type(exc).__name__
                record.errors[key] = record.errors.get(key, 0) + 1
                record.completions.append((time.perf_counter() - start, None))

        async def sample() -> None:
            while True:
                record.memory.append(
                    (time.perf_counter() - start, processes.rss_mb_by_component(server_pid))
                )
                await asyncio.sleep(sample_s)

        sampler = asyncio.create_task(sample())
        tasks = []
        due = 0.0
        i = 0
        while due < duration_s:
            due += float(rng.exponential(1.0 / rate_per_s))
            await asyncio.sleep(max(0.0, due - (time.perf_counter() - start)))
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        await asyncio.gather(*tasks)
        sampler.cancel()
    return record


def per_window(record: SoakRecord, window_s: float) -> list[dict[str, Any]]:
    """Throughput and latency percentiles per window of completion time."""
    if not record.completions:
        return []
    end = max(t for t, _ in record.completions)
    rows = []
    for k in range(max(1, math.ceil(end / window_s))):
        inside = [ms for t, ms in record.completions if k * window_s <= t < (k + 1) * window_s]
        ok = [ms for ms in inside if ms is not None]
        rows.append(
            {
                "window": k,
                "throughput_per_s": round(len(ok) / window_s, 3),
                "errors": len(inside) - len(ok),
                "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok else None,
                "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok else None,
            }
        )
    return rows


def verdict(
    memory: list[tuple[float, dict[str, float]]],
    windows: list[dict[str, Any]],
    duration_s: float,
    window_s: float,
    offered_per_s: float,
) -> dict[str, Any]:
    """Memory slope over the second half and drift of each window after warm-up.

    The first quarter of the run is warm-up; the windows compared are the complete ones after it
    (the last, partial window is left out). With Poisson arrivals a window's throughput follows
    its arrivals: ``arrival_noise`` is the relative standard deviation of a window's count
    (``1 / sqrt(rate x window)``), the scale against which the throughput drift is read.
    """
    half = [(t, sum(mb.values())) for t, mb in memory if t >= duration_s / 2]
    slope = (
        float(np.polyfit([t for t, _ in half], [m for _, m in half], 1)[0])
        if len(half) > 1
        else 0.0
    )
    mean = float(np.mean([m for _, m in half])) if half else 0.0
    growth = slope * 600 / mean if mean else 0.0
    steady = [
        w
        for w in windows
        if w["window"] * window_s >= duration_s / 4
        and (w["window"] + 1) * window_s <= duration_s
        and w["p99_ms"]
    ]
    first = steady[0] if steady else None
    drift = {"throughput": 0.0, "p99": 0.0}
    if first:
        for w in steady[1:]:
            drift["throughput"] = max(
                drift["throughput"],
                abs(w["throughput_per_s"] / first["throughput_per_s"] - 1),
            )
            drift["p99"] = max(drift["p99"], abs(w["p99_ms"] / first["p99_ms"] - 1))
    return {
        "memory_mb_second_half_mean": round(mean, 1),
        "memory_growth_per_10_min": round(growth, 4),
        "memory_plateaus": growth < MEMORY_GROWTH_PER_10_MIN,
        "max_throughput_drift": round(drift["throughput"], 3),
        "max_p99_drift": round(drift["p99"], 3),
        "arrival_noise": round(1 / math.sqrt(offered_per_s * window_s), 3),
        "steady": bool(first) and max(drift.values()) <= DRIFT,
    }


def verdict_of(path: Path) -> dict[str, Any]:
    """The verdict of a recorded run, from its result file's windows and memory samples."""
    import json

    report = json.loads(Path(path).read_text())
    memory = [
        (row["t_s"], {k: v for k, v in row.items() if k != "t_s"}) for row in report["memory_mb"]
    ]
    settings = report["settings"]
    return verdict(
        memory,
        report["windows"],
        settings["duration_min"] * 60,
        settings["window_s"],
        report["offered_per_s"],
    )


def plot(record: SoakRecord, windows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Memory per component over time, and p99 per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    names = sorted({name for _, mb in record.memory for name in mb})
    times = [t / 60 for t, _ in record.memory]
    for name in names:
        top.plot(times, [mb.get(name, 0.0) for _, mb in record.memory], label=name)
    top.plot(times, [sum(mb.values()) for _, mb in record.memory], "k--", label="total")
    top.set_ylabel("resident memory (MB)")
    top.legend(fontsize=7, ncol=2)
    top.set_title(title, fontsize=9)
    width = (record.completions[-1][0] / len(windows)) / 60 if windows else 1.0
    bottom.plot(
        [(w["window"] + 0.5) * width for w in windows],
        [w["p99_ms"] or float("nan") for w in windows],
        marker="o",
    )
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench soak", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument("--duration-min", type=float, default=30.0)
    parser.add_argument("--share", type=float, default=0.5, help="of measured capacity")
    parser.add_argument("--sample-s", type=float, default=10.0, help="memory sampling period")
    parser.add_argument("--window-s", type=float, default=60.0, help="throughput/p99 window")
    parser.add_argument("--capacity-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--verdict-of", type=Path, help="print the verdict of a recorded run's result file"
    )
    args = parser.parse_args(argv)
    if args.verdict_of is not None:
        print(verdict_of(args.verdict_of))
        return 0
    studies = workload.synthetic(SOAK_SYNTAXES, auxiliary=True)
    duration_s = args.duration_min * 60
    with (
        servers.workdir(args) as work,
        servers.ensemble(servers.checkpoint_of(args, work), work) as running,
    ):
        asyncio.run(latency.closed_loop(running.url, studies, 8, 10.0))  # warm-up
        capacity = asyncio.run(
            latency.closed_loop(running.url, studies, 8, args.capacity_s)
        ).summary()["throughput_per_s"]
        rate = capacity * args.share
        print(
            f"capacity {capacity:.2f} studies/s; offering {rate:.2f}/s for {args.duration_min} min"
        )
        record = asyncio.run(
            offer(running.url, studies, rate, duration_s, running.pid, args.sample_s)
        )
        server_versions = versions(running.url)
    windows = per_window(record, args.window_s)
    result = verdict(record.memory, windows, duration_s, args.window_s, rate)
    report = {
        "benchmark": "soak",
        "machine": describe_machine(),
        "versions": server_versions,
        "workload": {**studies.description, "auxiliary_share": 0.5},
        "settings": {
            "duration_min": args.duration_min,
            "share_of_capacity": args.share,
            "sample_s": args.sample_s,
            "window_s": args.window_s,
        },
        "capacity_per_s": capacity,
        "offered_per_s": round(rate, 3),
        "errors": record.errors,
        "verdict": result,
        "windows": windows,
        "memory_mb": [
            {"t_s": round(t, 1), **{k: round(v, 1) for k, v in mb.items()}}
            for t, mb in record.memory
        ],
    }
    out = write_result(report, "soak", args.out)
    plot(
        record,
        windows,
        out.with_suffix(".png"),
        f"soak at {rate:.2f} studies/s: {studies.summary()}",
    )
    print(f"verdict {result}; wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
