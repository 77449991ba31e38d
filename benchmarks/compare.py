"""The served ensemble and the naive baseline, side by side on the same inputs and machine.

``aln bench compare`` starts each server in turn on the same checkpoint (never both at once: they
would share the cores), runs the same latency sweep (:mod:`aln.benchmarks.latency`) against each
and reports, at every concurrency, the ensemble's throughput and p99 as ratios of the baseline's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers, workload
from aln.benchmarks.machine import write_result
from aln.benchmarks.plots import plot_sweeps
from aln.benchmarks.workload import Workload


def ratios(ensemble: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """Per concurrency: the ensemble's throughput and p99 over the baseline's.

    A throughput ratio above 1 and a p99 ratio below 1 both favour the ensemble.
    """
    by_level = {row["concurrency"]: row for row in baseline["levels"]}
    out = []
    for row in ensemble["levels"]:
        base = by_level.get(row["concurrency"])
        if base is None:
            continue
        p99 = (row["latency_ms"] or {}).get("p99")
        base_p99 = (base["latency_ms"] or {}).get("p99")
        out.append(
            {
                "concurrency": row["concurrency"],
                "ensemble_per_s": row["throughput_per_s"],
                "baseline_per_s": base["throughput_per_s"],
                "throughput_ratio": round(row["throughput_per_s"] / base["throughput_per_s"], 2)
                if base["throughput_per_s"]
                else None,
                "ensemble_p99_ms": p99,
                "baseline_p99_ms": base_p99,
                "p99_ratio": round(p99 / base_p99, 2) if p99 and base_p99 else None,
            }
        )
    return out


def compare(
    checkpoint: Path,
    work: Path,
    workload: Workload,
    concurrencies: list[int],
    *,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 60.0,
    spec_overrides: dict[str, Any] | None = None,
    baseline_workers: int | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Sweep the ensemble, then the baseline; return both results and the ratios."""
    settings = {"duration_s": duration_s, "warmup_s": warmup_s, "timeout_s": timeout_s, "log": log}
    with servers.ensemble(checkpoint, work, spec_overrides) as served:
        ours = latency.sweep(served.url, workload, concurrencies, label="aln_ensemble", **settings)
    with servers.baseline(checkpoint, work, baseline_workers) as served:
        naive = latency.sweep(served.url, workload, concurrencies, label="baseline", **settings)
    return {
        "benchmark": "compare",
        "machine": ours["machine"],
        "workload": workload.description,
        "baseline": {"workers": baseline_workers, **naive},
        "ensemble": ours,
        "ratios": ratios(ours, naive),
    }


def format_ratios(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`ratios`."""
    lines = [
        "| concurrency | ensemble studies/s | baseline studies/s | throughput ratio | "
        "ensemble p99 ms | baseline p99 ms | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['ensemble_per_s']} | {r['baseline_per_s']} | "
            f"{r['throughput_ratio']}x | {r['ensemble_p99_ms']} | {r['baseline_p99_ms']} | "
            f"{r['p99_ratio']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench compare", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    workload.add_arguments(parser)
    latency.add_sweep_arguments(parser, default="1,4,8")
    parser.add_argument(
        "--baseline-workers", type=int, help="baseline gRPC threads (default: its best, 2)"
    )
    parser.add_argument("--out", type=Path, help="result JSON (PNG written beside it)")
    args = parser.parse_args(argv)
    studies = workload.from_arguments(args)
    with servers.workdir(args) as work:
        report = compare(
            servers.checkpoint_of(args, work),
            work,
            studies,
            args.concurrency,
            **latency.sweep_settings(args),
            baseline_workers=args.baseline_workers,
            log=print,
        )
    out = write_result(report, "compare", args.out)
    plot_sweeps(
        [report["ensemble"], report["baseline"]],
        out.with_suffix(".png"),
        f"ensemble vs naive baseline: {studies.summary()}",
    )
    print(format_ratios(report["ratios"]))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
