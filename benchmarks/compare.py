"""The served ensemble against two baselines, side by side on the same inputs and machine.

``aln bench compare`` starts each server in turn on the same checkpoint (never two at once: they
would share the cores) and runs the same latency sweep (:mod:`aln.benchmarks.latency`) against
each, for every workload:

* ``naive``: the model served the way a user writes it (:mod:`aln.benchmarks.baseline`): the
  whole network forward per study, which runs the auxiliary backbone on an all-zero image when a
  study has no auxiliary image;
* ``equal-work``: the same server skipping that absent auxiliary image, so it does the network
  work the ensemble does (the ensemble skips all-zero auxiliary rows). The headline ratio.

Both baselines run with their intra-op threads and gRPC workers set explicitly: each to its best
in this machine's committed ``aln bench baseline-threads`` result
(``benchmarks/results/baseline_threads-<machine>.json``), or to ``--baseline-threads`` and
``--baseline-workers`` when given; the result records the options and where they came from.
Workloads are named ``SYNTAX`` or ``SYNTAX+aux`` (with an auxiliary region on the primary image).

``--engine-exports`` serves other engines of the same checkpoint (OpenVINO, int8: ``aln export``
folders) in turn with the same settings, and sets each against the fp32 ONNX Runtime ensemble.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from aln.benchmarks import latency, servers, workload
from aln.benchmarks.machine import describe_machine, write_result
from aln.benchmarks.plots import plot_sweeps
from aln.benchmarks.workload import Workload

BASELINES = ("naive", "equal-work")
DEFAULT_WORKLOADS = "explicit,explicit+aux,jpeg2000,jpeg2000+aux"


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


def named_workloads(names: str, per_syntax: int = 2) -> dict[str, Workload]:
    """``explicit,jpeg2000+aux`` -> one synthetic workload per name.

    Raises:
        ValueError: An unknown transfer syntax.
    """
    out = {}
    for name in names.split(","):
        syntax, _, aux = name.partition("+")
        if aux not in ("", "aux"):
            raise ValueError(f"A workload of '{name}' is invalid, it must be SYNTAX or SYNTAX+aux")
        out[name] = workload.synthetic((syntax,), auxiliary=bool(aux), per_syntax=per_syntax)
    return out


def sweep_all(
    url: str,
    workloads: dict[str, Workload],
    concurrencies: list[int],
    label: str,
    settings: latency.SweepSettings,
    log: Any = None,
) -> dict[str, dict[str, Any]]:
    """One latency sweep per workload against one running server."""
    return {
        name: latency.sweep(
            url, studies, concurrencies, label=f"{label} {name}", log=log, **settings
        )
        for name, studies in workloads.items()
    }


def tuned_baselines(sweep_file: Path | None = None) -> tuple[dict[str, Any], str]:
    """Each baseline's best options from the threads sweep, and where they came from.

    Args:
        sweep_file: An ``aln bench baseline-threads`` result (default: this machine's committed
            one). Without one, both baselines take the :class:`BaselineOptions` defaults.
    """
    import json

    from aln.benchmarks.baseline import BaselineOptions
    from aln.benchmarks.machine import RESULTS, machine_slug

    path = sweep_file or RESULTS / f"baseline_threads-{machine_slug(describe_machine())}.json"
    defaults = BaselineOptions()
    if not path.is_file():
        chosen = {"naive": defaults, "equal-work": replace(defaults, skip_absent_auxiliary=True)}
        return chosen, "BaselineOptions defaults (no threads sweep for this machine)"
    best = json.loads(path.read_text())["best"]
    chosen = {
        name: replace(
            defaults,
            threads=best[name]["threads"],
            workers=best[name]["workers"],
            skip_absent_auxiliary=name == "equal-work",
        )
        for name in BASELINES
    }
    return chosen, f"{path.parent.name}/{path.name}"


def compare(
    checkpoint: Path,
    work: Path,
    workloads: dict[str, Workload],
    concurrencies: list[int],
    settings: latency.SweepSettings,
    *,
    baselines: dict[str, Any] | None = None,
    baselines_source: str = "",
    spec_overrides: dict[str, Any] | None = None,
    engine_exports: list[Path] | None = None,
    with_baselines: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Sweep the ensemble, then each baseline, on every workload; return all with the ratios.

    Args:
        checkpoint: The checkpoint all three serve.
        work: Scratch folder.
        workloads: Named workloads (:func:`named_workloads`).
        concurrencies: Levels to measure.
        settings: Measured window, warm-up and deadline per level.
        baselines: Each baseline's :class:`~aln.benchmarks.baseline.BaselineOptions` (default:
            :func:`tuned_baselines`); the equal-work one skips the absent auxiliary image.
        baselines_source: Where those options came from (recorded).
        engine_exports: ``aln export`` folders of the same checkpoint in other engines or
            precisions (OpenVINO, int8), each served in turn with the same settings and set
            against the fp32 ensemble (``engines``: throughput and p99 ratios per workload).
        with_baselines: Sweep the baselines too (off: only the engines are compared).
        spec_overrides: The ensemble's repository settings.
        log: Called with a line per measured level.
    """
    if baselines is None:
        baselines, baselines_source = tuned_baselines()
    options = baselines
    sweeps: dict[str, dict[str, dict[str, Any]]] = {}
    with servers.ensemble(checkpoint, work, spec_overrides) as served:
        sweeps["ensemble"] = sweep_all(
            served.url, workloads, concurrencies, "ensemble", settings, log
        )
    labels = {}
    for export in engine_exports or []:
        with servers.ensemble(export, work, spec_overrides) as served:
            label = served.spec.engine_label if served.spec else str(export)
            labels[label] = str(export)
            sweeps[label] = sweep_all(served.url, workloads, concurrencies, label, settings, log)
    engines = {
        label: {
            "export": export,
            "ratios": {
                name: ratios(sweeps[label][name], sweeps["ensemble"][name]) for name in workloads
            },
        }
        for label, export in labels.items()
    }
    compared = BASELINES if with_baselines else ()
    for name in compared:
        with servers.baseline(checkpoint, work, options[name]) as served:
            sweeps[name] = sweep_all(served.url, workloads, concurrencies, name, settings, log)
    return {
        "benchmark": "compare",
        "machine": describe_machine(),
        "settings": dict(settings),
        "ensemble_engine": "onnx/fp32",
        "engines": engines,
        "baselines": {name: asdict(options[name]) for name in compared},
        "baselines_source": baselines_source if compared else None,
        "workloads": {
            name: {
                "description": studies.description,
                "ensemble": sweeps["ensemble"][name],
                **{label: sweeps[label][name] for label in labels},
                **{base: sweeps[base][name] for base in compared},
                "ratios": {
                    base: ratios(sweeps["ensemble"][name], sweeps[base][name]) for base in compared
                },
            }
            for name, studies in workloads.items()
        },
    }


def format_engines(report: dict[str, Any]) -> str:
    """A markdown table: per engine, workload and concurrency, against the fp32 ensemble."""
    lines = [
        "| engines | workload | concurrency | studies/s | fp32 studies/s | ratio | p99 ms | "
        "fp32 p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, entry in report["engines"].items():
        for name, levels in entry["ratios"].items():
            for level in levels:
                lines.append(
                    f"| {label} | {name} | {level['concurrency']} | {level['ensemble_per_s']} | "
                    f"{level['baseline_per_s']} | **{level['throughput_ratio']}x** | "
                    f"{level['ensemble_p99_ms']} | {level['baseline_p99_ms']} |"
                )
    return "\n".join(lines)


def format_ratios(report: dict[str, Any]) -> str:
    """A markdown table: per workload and concurrency, the ensemble against both baselines."""
    if not any(entry["ratios"] for entry in report["workloads"].values()):
        return ""  # engines compared alone (--no-baselines)
    lines = [
        "| workload | concurrency | ensemble studies/s | equal-work studies/s | ratio | "
        "naive studies/s | ratio | p99 ms ensemble / equal-work / naive |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["workloads"].items():
        equal = {r["concurrency"]: r for r in entry["ratios"]["equal-work"]}
        for naive in entry["ratios"]["naive"]:
            level = equal[naive["concurrency"]]
            lines.append(
                f"| {name} | {naive['concurrency']} | {naive['ensemble_per_s']} | "
                f"{level['baseline_per_s']} | **{level['throughput_ratio']}x** | "
                f"{naive['baseline_per_s']} | {naive['throughput_ratio']}x | "
                f"{naive['ensemble_p99_ms']} / {level['baseline_p99_ms']} / "
                f"{naive['baseline_p99_ms']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench compare", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument(
        "--workloads",
        default=DEFAULT_WORKLOADS,
        help=f"comma-separated SYNTAX or SYNTAX+aux (default {DEFAULT_WORKLOADS})",
    )
    latency.add_sweep_arguments(parser, default="8")
    parser.add_argument(
        "--baseline-threads",
        type=int,
        help="both baselines' intra-op threads (default: each one's best in the threads sweep)",
    )
    parser.add_argument(
        "--baseline-workers",
        type=int,
        help="both baselines' gRPC threads (default: each one's best in the threads sweep)",
    )
    parser.add_argument(
        "--engine-exports",
        type=lambda text: [Path(p) for p in text.split(",") if p],
        default=[],
        metavar="DIR,DIR",
        help="export folders of the same checkpoint in other engines/precisions (aln export "
        "--format openvino --precision int8 ...), each served after the fp32 ensemble",
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="compare engines only (skip the naive and equal-work baselines)",
    )
    parser.add_argument("--out", type=Path, help="result JSON (PNG written beside it)")
    args = parser.parse_args(argv)
    workloads = named_workloads(args.workloads)
    baselines, source = tuned_baselines()
    if args.baseline_threads or args.baseline_workers:
        baselines = {
            name: replace(
                options,
                threads=args.baseline_threads or options.threads,
                workers=args.baseline_workers or options.workers,
            )
            for name, options in baselines.items()
        }
        source = "--baseline-threads/--baseline-workers"
    with servers.workdir(args) as work:
        report = compare(
            servers.checkpoint_of(args, work),
            work,
            workloads,
            args.concurrency,
            latency.sweep_settings(args),
            baselines=baselines,
            baselines_source=source,
            engine_exports=args.engine_exports,
            with_baselines=not args.no_baselines,
            log=print,
        )
    out = write_result(report, "compare", args.out)
    for name, entry in report["workloads"].items():
        plot_sweeps(
            [entry["ensemble"], *(entry[k] for k in (*report["engines"], *entry["ratios"]))],
            out.with_name(f"{out.stem}-{name.replace('+', '-')}.png"),
            f"ensemble vs baselines: {workloads[name].summary()}",
        )
    print(format_ratios(report))
    if report["engines"]:
        print(format_engines(report))
    print(f"wrote {out} and one PNG per workload beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
