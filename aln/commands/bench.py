"""``aln bench <benchmark> ...``: every benchmark and load test, one command each.

Each benchmark is a module of :mod:`aln.benchmarks` with its own argument parser; this command
forwards the remaining arguments to it (``aln bench latency --help`` shows that benchmark's
options). Every one writes a result file naming the machine it ran on.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCHMARKS = {
    "latency": ("latency", "latency sweep of a server over concurrency levels (+ PNG)"),
    "compare": ("compare", "the ensemble, the equal-work and the naive baseline side by side"),
    "ablation": ("ablation", "one change at a time from the naive baseline to the ensemble"),
    "baseline-threads": ("baseline_threads", "the baselines' best threads and gRPC workers"),
    "overhead": ("overhead", "served vs the same work in one process, gRPC and shared memory"),
    "engines": ("engines", "engine images/s in process (eager, ONNX Runtime, OpenVINO, int8)"),
    "fidelity": ("fidelity", "each reduced-precision engine's fidelity gate on a trained model"),
    "crop": ("crop_decode", "decode-to-crop time per transfer syntax, region vs full decode"),
    "search": ("search", "best throughput within a p99 budget over serving configurations"),
    "report": ("report", "markdown table and plots across result files and devices"),
    "baseline": ("baseline", "serve the naive baseline (one process, eager torch, gRPC)"),
    "fuzz": ("fuzz_preprocessing", "mutation fuzzing of the preprocessing"),
    "overload": ("overload", "open-loop overload, shedding and recovery of the ensemble"),
    "failover": ("failover", "a replica killed under load behind nginx, as the callers see it"),
    "recovery": ("recovery", "a crashed stub of each model under load: time until it serves again"),
    "soak": ("soak", "memory, throughput and p99 under sustained load at half capacity"),
    "explain": ("explanation_cost", "explanation latency and its cost to predictions (10% mix)"),
    "plan": ("plan", "capacity plan: a simulation checked against a sweep, then sized"),
    "explain-evidence": (
        "explanation_evidence",
        "occlusion importance inside the lesion vs the rest, trained vs untrained",
    ),
}


def register(commands: Any) -> None:
    """Add ``aln bench``."""
    bench = commands.add_parser(
        "bench",
        help="benchmarks and load tests (latency, compare, overhead, engines, ...)",
        description="Run one benchmark; its options follow its name (aln bench NAME --help). "
        "Locust: locust -f benchmarks/locustfile.py (see benchmarks/README.md).",
    )
    bench.add_argument(
        "benchmark",
        choices=tuple(BENCHMARKS),
        metavar="BENCHMARK",
        # argparse %-formats help text: a literal percent sign must be doubled.
        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()).replace("%", "%%"),
    )
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Forward to the benchmark module's ``main``."""
    module = importlib.import_module(f"aln.benchmarks.{BENCHMARKS[args.benchmark][0]}")
    status: int = module.main(args.options)
    return status
