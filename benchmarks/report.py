"""``aln bench report results/*.json``: markdown and plots across devices and configurations.

Reads the result files the other benchmarks write (each names its machine), groups them by kind
and writes ``report.md`` with a table per kind, ``report-latency.png`` (every latency sweep,
including both sides of each comparison) and ``report-engines.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aln.benchmarks.compare import BASELINES, format_ratios
from aln.benchmarks.plots import device_label, plot_engines, plot_sweeps


class ReportError(ValueError):
    """A result file that cannot be read or has no ``benchmark`` kind."""


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Read result files, refusing ones that are not benchmark results (naming the file)."""
    results = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ReportError(f"Cannot read result file '{path}': {exc}") from exc
        if not isinstance(result, dict) or "benchmark" not in result:
            raise ReportError(f"'{path}' is not a benchmark result (no 'benchmark' key)")
        result["_file"] = Path(path).name
        results.append(result)
    return results


def _latency_rows(results: list[dict[str, Any]]) -> list[str]:
    header = (
        "device | server | workload | concurrency | studies/s | p50 ms | p99 ms | errors | file"
    )
    lines = [f"| {header} |", "| --- " * 9 + "|"]
    for result in results:
        workload = result["workload"]
        what = ",".join(workload.get("transfer_syntaxes", [workload.get("source", "?")]))
        what += " +aux" if workload.get("auxiliary") else ""
        for row in result["levels"]:
            latency = row["latency_ms"] or {}
            errors = sum(row["errors"].values())
            lines.append(
                f"| {device_label(result['machine'])} | {result['label']} | {what} | "
                f"{row['concurrency']} | {row['throughput_per_s']:.2f} | {latency.get('p50')} | "
                f"{latency.get('p99')} | {errors} | {result['_file']} |"
            )
    return lines


def _engine_rows(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| device | backbone | batch | engine | images/s | file |", "| --- " * 6 + "|"]
    for result in results:
        for row in result["results"]:
            for key, value in row.items():
                if key.endswith("_img_s") and value is not None:
                    lines.append(
                        f"| {device_label(result['machine'])} | {row['backbone']} | "
                        f"{row['batch']} | {key.removesuffix('_img_s')} | {value} | "
                        f"{result['_file']} |"
                    )
    return lines


def write_report(paths: list[Path], out: Path) -> Path:
    """Write ``report.md`` and its plots into ``out``; return the markdown path.

    Raises:
        ReportError: A file is unreadable or not a result, or no file was given.
    """
    if not paths:
        raise ReportError("No result files given")
    results = load_results(paths)
    out.mkdir(parents=True, exist_ok=True)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_kind.setdefault(result["benchmark"], []).append(result)
    sides = []
    for result in by_kind.get("compare", []):
        for entry in result["workloads"].values():
            for side in ("ensemble", *BASELINES):
                sides.append({**entry[side], "_file": result["_file"]})
    sweeps = by_kind.get("latency", []) + sides
    lines = ["# aln-triton benchmark report", ""]
    lines += [f"From {len(results)} result files: {', '.join(r['_file'] for r in results)}.", ""]
    if sweeps:
        lines += ["## Latency sweeps", "", *_latency_rows(sweeps), ""]
        plot_sweeps(sweeps, out / "report-latency.png", "latency sweeps")
        lines += ["![latency sweeps](report-latency.png)", ""]
    for result in by_kind.get("compare", []):
        lines += [
            f"## Ensemble vs equal-work and naive baselines on "
            f"{device_label(result['machine'])} ({result['_file']})",
            "",
            format_ratios(result),
            "",
        ]
    if by_kind.get("engines"):
        lines += ["## Engines", "", *_engine_rows(by_kind["engines"]), ""]
        plot_engines(by_kind["engines"], out / "report-engines.png")
        lines += ["![engines](report-engines.png)", ""]
    other = sorted(set(by_kind) - {"latency", "compare", "engines"})
    if other:
        lines += [f"Also given (not tabulated here): {', '.join(other)}.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="result JSON files")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/report"), help="folder")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results, args.out)
    except ReportError as exc:
        print(f"aln bench report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
