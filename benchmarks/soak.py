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
import contextlib
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
VARIANTS: dict[str, dict[str, Any]] = {
    "glibc-default": {"allocator": "glibc"},
    "grpc-pool-1": {"allocator": "glibc", "extra_args": ["--grpc-infer-allocation-pool-size=1"]},
    "malloc-arenas-2": {"allocator": "glibc", "environment": {"MALLOC_ARENA_MAX": "2"}},
    "malloc-mmap-1mb": {
        "allocator": "glibc",
        "environment": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    },
    "jemalloc": {"allocator": "jemalloc"},
    "tcmalloc": {"allocator": "tcmalloc"},
}
"""Server settings a soak compares side by side (``--variant``), as
:class:`aln.serving.server.ServerConfig` fields (the glibc ones name their allocator, the server's
default being jemalloc), each one change from glibc's own malloc defaults:
Triton's gRPC pool of request objects, each keeping its largest payload, cut from 8 to 1; glibc's
arenas (8 per core by default) cut to 2; glibc's mmap threshold fixed at 1 MiB, so that a freed
multi-megabyte buffer goes back to the system (by default the threshold rises to the size of the
largest buffer freed, up to 32 MiB, after which buffers of a study's size are carved from the
arenas' heaps); jemalloc or tcmalloc preloaded in glibc's place
(:data:`aln.serving.server.ALLOCATORS`). Result files written before this list call glibc's
defaults ``default``."""


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
    (``1 / sqrt(rate x window)``), the scale against which the throughput drift is read. The
    halves compare the same windows in two halves, so each side holds many windows' requests:
    the throughput of the later half against the earlier, and the median of the windows' p99
    (a typical window's tail) likewise; ``halves_steady`` when both stay within ``DRIFT``.
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
    halves = {"throughput": 0.0, "p99": 0.0}
    if len(steady) > 1:
        parts = (steady[: len(steady) // 2], steady[len(steady) // 2 :])
        # every window is as long, so a half's rate is its windows' mean
        rate = [float(np.mean([w["throughput_per_s"] for w in part])) for part in parts]
        tail = [float(np.median([w["p99_ms"] for w in part])) for part in parts]
        halves = {"throughput": abs(rate[1] / rate[0] - 1), "p99": abs(tail[1] / tail[0] - 1)}
    return {
        "memory_mb_second_half_mean": round(mean, 1),
        "memory_growth_per_10_min": round(growth, 4),
        "memory_plateaus": growth < MEMORY_GROWTH_PER_10_MIN,
        "max_throughput_drift": round(drift["throughput"], 3),
        "max_p99_drift": round(drift["p99"], 3),
        "arrival_noise": round(1 / math.sqrt(offered_per_s * window_s), 3),
        "steady": bool(first) and max(drift.values()) <= DRIFT,
        "halves_throughput_drift": round(halves["throughput"], 3),
        "halves_p99_drift": round(halves["p99"], 3),
        "halves_steady": len(steady) > 1 and max(halves.values()) <= DRIFT,
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


def update_verdict(path: Path, recomputed: dict[str, Any]) -> None:
    """Replace a result file's verdict, keeping the one its run wrote as ``verdict_as_run``."""
    import json

    report = json.loads(Path(path).read_text())
    report.setdefault("verdict_as_run", report["verdict"])
    report["verdict"] = recomputed
    report["verdict_note"] = (
        "recomputed by `aln bench soak --verdict-of FILE --update` from this run's windows and "
        "memory samples, which are unchanged; verdict_as_run is what the run itself wrote"
    )
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def plot(record: SoakRecord, windows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Memory per component over time, and p99 per window."""
    import matplotlib.pyplot as plt

    from aln.benchmarks import plots  # deferred: matplotlib (its module picks the Agg backend)

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
    plots.save(fig, path)


def summary(record: SoakRecord, rate: float, duration_s: float, window_s: float) -> dict[str, Any]:
    """A run's errors, verdict, windows and memory samples, as the result file keeps them."""
    windows = per_window(record, window_s)
    return {
        "errors": record.errors,
        "verdict": verdict(record.memory, windows, duration_s, window_s, rate),
        "windows": windows,
        "memory_mb": [
            {"t_s": round(t, 1), **{k: round(v, 1) for k, v in mb.items()}}
            for t, mb in record.memory
        ],
    }


def plot_variants(reports: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Triton core's and the whole server's resident memory over time, one line per variant."""
    import matplotlib.pyplot as plt

    from aln.benchmarks import plots  # deferred: matplotlib (its module picks the Agg backend)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, report in reports.items():
        times = [row["t_s"] / 60 for row in report["memory_mb"]]
        top.plot(times, [row.get("tritonserver", 0.0) for row in report["memory_mb"]], label=name)
        totals = [sum(v for k, v in row.items() if k != "t_s") for row in report["memory_mb"]]
        bottom.plot(times, totals, label=name)
    top.set_ylabel("Triton core resident memory (MB)")
    top.legend(fontsize=8)
    top.set_title(title, fontsize=9)
    bottom.set_ylabel("whole server resident memory (MB)")
    bottom.set_xlabel("minutes")
    plots.save(fig, path)


def capacity_of(url: str, studies: workload.Workload, seconds: float) -> float:
    """Studies per second a server answers closed loop at concurrency 8, after a warm-up."""
    asyncio.run(latency.closed_loop(url, studies, 8, 10.0))
    return float(
        asyncio.run(latency.closed_loop(url, studies, 8, seconds)).summary()["throughput_per_s"]
    )


def side_by_side(
    args: argparse.Namespace, names: list[str], studies: workload.Workload
) -> dict[str, Any]:
    """One server per variant on one repository, each offered an equal share of the load.

    Every server gets the same warm-up and capacity runs, alone, in ``--capacity-rounds`` turns
    whose order alternates (first to last, then last to first), so a drift of the machine's speed
    falls on every variant alike; then the same arrivals (one seed), so the variants do equal work
    at the same moments. The share offered is of the first variant's capacity.
    """
    duration_s = args.duration_min * 60
    with servers.workdir(args) as work, contextlib.ExitStack() as stack:
        repo = servers.demo_repository(args, work)
        running = {
            name: stack.enter_context(
                servers.serve(repo, None, work / f"tritonserver-{name}.log", **VARIANTS[name])
            )
            for name in names
        }
        turns: dict[str, list[float]] = {name: [] for name in names}
        for turn in range(args.capacity_rounds):
            for name in names if turn % 2 == 0 else names[::-1]:
                turns[name].append(capacity_of(running[name].url, studies, args.capacity_s))
                print(f"capacity of {name}, turn {turn + 1}: {turns[name][-1]:.3f} studies/s")
        capacities = {name: round(float(np.mean(values)), 3) for name, values in turns.items()}
        capacity = capacities[names[0]]
        rate = capacity * args.share / len(names)
        print(
            f"capacity {capacity:.2f} studies/s; offering {rate:.2f}/s to each of "
            f"{len(names)} servers for {args.duration_min} min"
        )

        async def offer_all() -> list[SoakRecord]:
            return await asyncio.gather(
                *(
                    offer(r.url, studies, rate, duration_s, r.pid, args.sample_s)
                    for r in running.values()
                )
            )

        records = dict(zip(names, asyncio.run(offer_all()), strict=True))
        server_versions = versions(running[names[0]].url)
    return {
        "benchmark": "soak_variants",
        "machine": describe_machine(),
        "versions": server_versions,
        "workload": {**studies.description, "auxiliary_share": 0.5},
        "settings": {**_settings(args), "capacity_rounds": args.capacity_rounds},
        "capacity_per_s": capacity,
        "offered_per_s": round(rate, 3),
        "offered_note": f"to each of the {len(names)} servers, with the same arrival times",
        "variants": {
            name: {
                "server": VARIANTS[name],
                "capacity_per_s": capacities[name],
                "capacity_turns_per_s": turns[name],
                **summary(record, rate, duration_s, args.window_s),
            }
            for name, record in records.items()
        },
    }


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "duration_min": args.duration_min,
        "share_of_capacity": args.share,
        "sample_s": args.sample_s,
        "window_s": args.window_s,
        "capacity_s": args.capacity_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench soak", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument("--duration-min", type=float, default=30.0)
    parser.add_argument("--share", type=float, default=0.5, help="of measured capacity")
    parser.add_argument("--sample-s", type=float, default=10.0, help="memory sampling period")
    parser.add_argument("--window-s", type=float, default=60.0, help="throughput/p99 window")
    parser.add_argument("--capacity-s", type=float, default=30.0)
    parser.add_argument(
        "--capacity-rounds",
        type=int,
        default=2,
        help="side by side: capacity turns per variant, in alternating order (mean reported)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        help="server settings to soak side by side, one server each, sharing the load equally "
        "(repeat; default: one server with the default settings)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--verdict-of", type=Path, help="print the verdict of a recorded run's result file"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --verdict-of: write that verdict into the file (the run's own kept as "
        "verdict_as_run)",
    )
    args = parser.parse_args(argv)
    if args.verdict_of is not None:
        recomputed = verdict_of(args.verdict_of)
        print(recomputed)
        if args.update:
            update_verdict(args.verdict_of, recomputed)
        return 0
    studies = workload.synthetic(SOAK_SYNTAXES, auxiliary=True)
    if args.variant and len(args.variant) > 1:
        report = side_by_side(args, list(dict.fromkeys(args.variant)), studies)
        out = write_result(report, "soak_variants", args.out)
        title = f"{len(report['variants'])} servers at {report['offered_per_s']:.2f} studies/s each"
        plot_variants(report["variants"], out.with_suffix(".png"), title)
        for name, variant in report["variants"].items():
            print(f"{name}: {variant['verdict']}")
        print(f"wrote {out} and {out.with_suffix('.png')}")
        return 0
    duration_s = args.duration_min * 60
    server_fields = VARIANTS[args.variant[0]] if args.variant else {}
    with servers.workdir(args) as work:
        repo = servers.demo_repository(args, work)
        with servers.serve(repo, None, work / "tritonserver.log", **server_fields) as server:
            capacity = capacity_of(server.url, studies, args.capacity_s)
            rate = capacity * args.share
            print(
                f"capacity {capacity:.2f} studies/s; offering {rate:.2f}/s for "
                f"{args.duration_min} min"
            )
            record = asyncio.run(
                offer(server.url, studies, rate, duration_s, server.pid, args.sample_s)
            )
            server_versions = versions(server.url)
    result = summary(record, rate, duration_s, args.window_s)
    report = {
        "benchmark": "soak",
        "machine": describe_machine(),
        "versions": server_versions,
        "workload": {**studies.description, "auxiliary_share": 0.5},
        "settings": {**_settings(args), "server": server_fields},
        "capacity_per_s": capacity,
        "offered_per_s": round(rate, 3),
        **result,
    }
    out = write_result(report, "soak", args.out)
    plot(
        record,
        result["windows"],
        out.with_suffix(".png"),
        f"soak at {rate:.2f} studies/s: {studies.summary()}",
    )
    print(f"verdict {result['verdict']}; wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
