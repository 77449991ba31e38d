"""The baselines' best threading on this machine: the sweep that sets their defaults.

``aln bench baseline-threads`` serves each baseline (naive and equal-work) with every pair of
intra-op threads and gRPC workers in turn, on the same workload at the same concurrency, and
records throughput and p99 of each. :class:`~aln.benchmarks.baseline.BaselineOptions` defaults to
the fastest pair, and a test checks that it still is the fastest in the committed result file.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers
from aln.benchmarks.baseline import BaselineOptions
from aln.benchmarks.compare import named_workloads
from aln.benchmarks.machine import describe_machine, write_result


def best(rows: list[dict[str, Any]], baseline: str) -> dict[str, Any]:
    """The fastest row of one baseline (throughput, ties broken by the lower p99)."""
    mine = [r for r in rows if r["baseline"] == baseline]
    return max(mine, key=lambda r: (r["throughput_per_s"], -(r["p99_ms"] or 0)))


def sweep_threads(
    checkpoint: Path,
    work: Path,
    workload_name: str,
    concurrency: int,
    threads: list[int],
    workers: list[int],
    settings: latency.SweepSettings,
    log: Any = None,
) -> dict[str, Any]:
    """Measure every (baseline, threads, workers); return the result document."""
    studies = named_workloads(workload_name)[workload_name]
    rows = []
    variants = {"naive": False, "equal-work": True}
    for (name, skip), t, w in itertools.product(variants.items(), threads, workers):
        options = replace(BaselineOptions(), threads=t, workers=w, skip_absent_auxiliary=skip)
        with servers.baseline(checkpoint, work, options) as served:
            sweep = latency.sweep(
                served.url, studies, [concurrency], label=f"{name} t{t} w{w}", log=log, **settings
            )
        level = sweep["levels"][0]
        rows.append(
            {
                "baseline": name,
                "threads": t,
                "workers": w,
                "throughput_per_s": level["throughput_per_s"],
                "p99_ms": (level["latency_ms"] or {}).get("p99"),
                "errors": level["errors"],
            }
        )
    return {
        "benchmark": "baseline_threads",
        "machine": describe_machine(),
        "settings": {**settings, "concurrency": concurrency, "workload": workload_name},
        "workload": studies.description,
        "rows": rows,
        "best": {name: best(rows, name) for name in variants},
        "defaults": asdict(BaselineOptions()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aln bench baseline-threads", description=__doc__.splitlines()[0]
    )
    servers.add_arguments(parser, url=False)
    parser.add_argument("--workload", default="explicit", help="SYNTAX or SYNTAX+aux")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", default="1,2", help="intra-op threads to try")
    parser.add_argument("--workers", default="1,2,4", help="gRPC worker threads to try")
    latency.add_timing_arguments(parser, duration_s=20.0)
    parser.add_argument("--out", type=Path, help="result JSON")
    args = parser.parse_args(argv)
    with servers.workdir(args) as work:
        report = sweep_threads(
            servers.checkpoint_of(args, work),
            work,
            args.workload,
            args.concurrency,
            [int(v) for v in args.threads.split(",")],
            [int(v) for v in args.workers.split(",")],
            latency.sweep_settings(args),
            log=print,
        )
    out = write_result(report, "baseline_threads", args.out)
    for name, row in report["best"].items():
        print(
            f"best {name}: threads {row['threads']}, workers {row['workers']}: "
            f"{row['throughput_per_s']} studies/s, p99 {row['p99_ms']} ms"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
