"""Where the speed comes from: one change at a time, from the naive baseline to the served ensemble.

``aln bench ablation`` exports the checkpoint once, then serves it in :func:`ladder` order, each
step differing from the one before by one change, and measures every step on the same workloads
at the same concurrency in one run. The first two steps are the baseline process
(:mod:`aln.benchmarks.baseline`); the rest are Triton repositories whose last step is exactly the
served default (:class:`aln.serving.spec.RepositorySpec` defaults; a test checks the ladder).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers
from aln.benchmarks.baseline import BaselineOptions
from aln.benchmarks.compare import named_workloads, sweep_all, tuned_baselines
from aln.benchmarks.machine import describe_machine, write_result


@dataclass(frozen=True)
class Step:
    """One server configuration of the ablation.

    Attributes:
        name: Short name.
        change: The one thing that differs from the step before.
        baseline: Options of the baseline process, or None for a Triton repository.
        spec: :class:`RepositorySpec` fields that differ from the served defaults.
    """

    name: str
    change: str
    baseline: BaselineOptions | None = None
    spec: dict[str, Any] = field(default_factory=dict)


def ladder(naive: BaselineOptions) -> tuple[Step, ...]:
    """The steps, from ``naive`` (the tuned naive baseline) to the served default.

    The baseline steps and the first Triton step run the engines with ``naive.threads``, so moving
    into Triton changes where the work runs, not how many threads it gets.
    """
    start: dict[str, Any] = {
        "max_batch": 1,
        "preprocess_instances": 1,
        "backbone_instances": 1,
        "engine_threads": naive.threads,
        "decode": "full",
        "skip_absent_auxiliary": False,
    }
    batching = {**start, "max_batch": 32}
    instances = {**batching, "preprocess_instances": 2}
    region = {**instances, "decode": "region"}
    skip = {**region, "skip_absent_auxiliary": True}
    return (
        Step("naive", "the naive baseline: eager torch, full decode, one process", naive),
        Step(
            "onnxruntime",
            "eager torch -> ONNX Runtime (same process, batch 1, same threads)",
            replace(naive, engine="onnxruntime"),
        ),
        Step(
            "triton",
            "one process -> Triton: preprocessing and each engine in processes of their own, "
            "pipelined (1 instance each, batch 1, full decode, no auxiliary skip)",
            spec=start,
        ),
        Step(
            "dynamic-batching", "batch 1 -> dynamic batching of the engines (max 32)", spec=batching
        ),
        Step("preprocess-instances", "1 -> 2 preprocessing instances", spec=instances),
        Step("region-decode", "full -> region decode (only the crop is decoded)", spec=region),
        Step(
            "auxiliary-skip",
            "the auxiliary backbone skips studies without an auxiliary image",
            spec=skip,
        ),
        Step(
            "served-default",
            "engines: 1 instance of the baseline's threads -> 2 single-threaded instances "
            "(the served default)",
            spec={},
        ),
    )


def ablation(
    checkpoint: Path,
    work: Path,
    workload_names: str,
    concurrency: int,
    settings: latency.SweepSettings,
    log: Any = None,
) -> dict[str, Any]:
    """Serve every step of :func:`ladder` in turn and measure it; return the result document.

    The naive baseline is the tuned one of ``aln bench compare`` (its best threads and workers on
    this machine), so the first step here is the compare's naive baseline.
    """
    from aln.export.pipeline import export_checkpoint

    tuned, source = tuned_baselines()
    steps = ladder(tuned["naive"])
    workloads = named_workloads(workload_names)
    export = work / "export"
    if not (export / "export_report.json").is_file():
        export_checkpoint(checkpoint, export)
    rows = []
    for step in steps:
        if step.baseline is not None:
            context = servers.baseline(checkpoint, work, step.baseline, export)
        else:
            context = servers.ensemble(export, work, step.spec)
        with context as served:
            sweeps = sweep_all(served.url, workloads, [concurrency], step.name, settings, log)
        rows.append(
            {
                "step": step.name,
                "change": step.change,
                "server": "baseline" if step.baseline is not None else "triton",
                "settings": asdict(step.baseline) if step.baseline else step.spec,
                "workloads": {name: sweep["levels"][0] for name, sweep in sweeps.items()},
            }
        )
    return {
        "benchmark": "ablation",
        "machine": describe_machine(),
        "settings": {**settings, "concurrency": concurrency, "baselines_source": source},
        "workloads": {name: w.description for name, w in workloads.items()},
        "steps": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    """A markdown table: per step, throughput and p99 on each workload."""
    names = list(report["workloads"])
    head = " | ".join(f"{n} studies/s | {n} p99 ms" for n in names)
    lines = [f"| step | change | {head} |", "| --- " * (2 + 2 * len(names)) + "|"]
    for row in report["steps"]:
        cells = []
        for name in names:
            level = row["workloads"][name]
            cells += [
                f"{level['throughput_per_s']:.2f}",
                f"{(level['latency_ms'] or {}).get('p99')}",
            ]
        lines.append(f"| {row['step']} | {row['change']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench ablation", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument("--workloads", default="explicit,jpeg2000", help="SYNTAX[+aux],...")
    parser.add_argument("--concurrency", type=int, default=8)
    latency.add_timing_arguments(parser, duration_s=20.0)
    parser.add_argument("--out", type=Path, help="result JSON")
    args = parser.parse_args(argv)
    with servers.workdir(args) as work:
        report = ablation(
            servers.checkpoint_of(args, work),
            work,
            args.workloads,
            args.concurrency,
            latency.sweep_settings(args),
            log=print,
        )
    out = write_result(report, "ablation", args.out)
    print(format_table(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
