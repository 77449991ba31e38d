"""Configuration search: the best served throughput within a p99 latency budget.

``aln bench search --preprocess-instances 1,2 --max-batch 8,32 --queue-delay-us 0,2000
[--backbone-instances 1,2 --engine-threads 1,2] --concurrency 8 --p99-budget-ms 2000`` builds
one repository per combination (the rest of the spec at its defaults), starts it, runs the same
latency sweep on the same workload, and ranks the combinations by their best throughput at any
measured concurrency whose p99 stays within the budget. Combinations that never meet the budget
are listed last.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers, workload
from aln.benchmarks.machine import describe_machine, write_result

GRID = (
    "preprocess_instances",
    "max_batch",
    "max_queue_delay_us",
    "backbone_instances",
    "engine_threads",
)


def best_within(levels: list[dict[str, Any]], budget_ms: float) -> dict[str, Any] | None:
    """The highest-throughput level with no errors and p99 within ``budget_ms``."""
    fitting = [
        row
        for row in levels
        if row["latency_ms"] and not row["errors"] and row["latency_ms"]["p99"] <= budget_ms
    ]
    return max(fitting, key=lambda row: row["throughput_per_s"], default=None)


def search(
    checkpoint: Path,
    work: Path,
    studies: workload.Workload,
    grid: dict[str, list[int]],
    concurrencies: list[int],
    budget_ms: float,
    *,
    duration_s: float,
    warmup_s: float,
    log: Any = None,
) -> dict[str, Any]:
    """Measure every combination of ``grid``; return them ranked (best first)."""
    from aln.export.pipeline import export_checkpoint

    exported = work / "export"
    if not exported.is_dir():  # export (and check parity) once; every trial builds from it
        export_checkpoint(checkpoint, exported)
    trials = []
    for values in itertools.product(*(grid[k] for k in GRID)):
        spec = dict(zip(GRID, values, strict=True))
        name = ",".join(f"{k}={v}" for k, v in spec.items())
        trial_dir = work / name.replace(",", "_").replace("=", "-")
        trial_dir.mkdir(parents=True, exist_ok=True)
        with servers.ensemble(exported, trial_dir, spec) as served:
            result = latency.sweep(
                served.url,
                studies,
                concurrencies,
                duration_s=duration_s,
                warmup_s=warmup_s,
                label=name,
                log=log,
            )
        best = best_within(result["levels"], budget_ms)
        trials.append({"spec": spec, "best": best, "levels": result["levels"]})
    trials.sort(key=lambda t: -(t["best"]["throughput_per_s"] if t["best"] else -1.0))
    return {
        "benchmark": "search",
        "machine": describe_machine(),
        "workload": studies.description,
        "p99_budget_ms": budget_ms,
        "grid": grid,
        "concurrency": concurrencies,
        "trials": trials,
        "best": trials[0] if trials and trials[0]["best"] else None,
    }


def format_trials(report: dict[str, Any]) -> str:
    """A markdown table of the ranked trials."""
    lines = [
        "| " + " | ".join(GRID) + " | best studies/s within budget | at concurrency | p99 ms |",
        "| --- " * (len(GRID) + 3) + "|",
    ]
    for trial in report["trials"]:
        best = trial["best"]
        cells = [str(trial["spec"][k]) for k in GRID]
        if best:
            cells += [str(best["throughput_per_s"]), str(best["concurrency"])]
            cells.append(str(best["latency_ms"]["p99"]))
        else:
            cells += ["over budget", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench search", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    workload.add_arguments(parser)
    latency.add_sweep_arguments(parser, default="8")
    parser.add_argument("--preprocess-instances", type=_ints, default=[1, 2])
    parser.add_argument("--max-batch", type=_ints, default=[8, 32])
    parser.add_argument("--queue-delay-us", type=_ints, default=[0, 2000])
    parser.add_argument("--backbone-instances", type=_ints, default=[1])
    parser.add_argument("--engine-threads", type=_ints, default=[2], help="per engine instance")
    parser.add_argument("--p99-budget-ms", type=float, default=2000.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    grid = {
        "preprocess_instances": args.preprocess_instances,
        "max_batch": args.max_batch,
        "max_queue_delay_us": args.queue_delay_us,
        "backbone_instances": args.backbone_instances,
        "engine_threads": args.engine_threads,
    }
    with servers.workdir(args) as work:
        report = search(
            servers.checkpoint_of(args, work),
            work,
            workload.from_arguments(args),
            grid,
            args.concurrency,
            args.p99_budget_ms,
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            log=print,
        )
    out = write_result(report, "search", args.out)
    print(format_trials(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
