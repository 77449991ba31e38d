"""Capacity plan: a discrete-event model of the served pipeline, checked against a measured sweep.

Three steps, each writing a result file (``benchmarks/results/plan_*-<machine>.json``):

``aln bench plan measure``
    Starts the demo ensemble (or measures ``--url``), then a closed-loop latency sweep of the same
    workload in rounds; before every round and after the last, per-request service times with
    nothing else in flight, and again beside a busy engine (:mod:`aln.benchmarks.service_times`).
    Both go into ``plan_measured``.
``aln bench plan validate``
    Simulates the sweep from the service times alone (:mod:`aln.benchmarks.capacity`), this machine
    as it ran: the load generator and every model on the same cores. Writes simulated beside
    measured throughput and p99 per concurrency, the relative errors, and a PNG; the model passes
    when every error is within ``--tolerance`` (15%).
``aln bench plan network``
    Answers a network's question: for a transfer-syntax mix, arrivals per hour with a daily peak
    and a p99 budget, how many replicas (nodes of N cores and G GPUs of a given engine speed) are
    needed at the peak hour, and which resource is the bottleneck. Writes the table and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from aln.benchmarks import (
    capacity,
    latency,
    plots,
    processes,
    servers,
    service_times,
    sizing,
    triton_stats,
    workload,
)
from aln.benchmarks.capacity import Node, Profile, Study
from aln.benchmarks.machine import RESULTS, describe_machine, machine_slug, versions, write_result
from aln.benchmarks.service_times import ServiceTimes
from aln.client import AlnClient, AsyncAlnClient

MEASURE_SYNTAXES = ("explicit", "jpeg2000")
"""The measured workload: two syntaxes whose decoding costs differ tenfold."""
TOLERANCE = 0.15
"""Largest accepted relative error of simulated throughput and p99 against the measured sweep."""


def interleaved_sweep(
    url: str,
    studies: workload.Workload,
    concurrencies: list[int],
    rounds: int,
    settings: latency.SweepSettings,
    before_round: Callable[[], None] | None = None,
    pid: int | None = None,
) -> list[dict[str, Any]]:
    """Every level ``rounds`` times, up the levels then down again, pooled per level.

    This machine's speed drifts by several percent over minutes (a shared virtual machine); in
    turn up and down, every level sees early and late minutes alike. Each level's row pools the
    rounds' latencies; its throughput is all successes over all its measured seconds.
    ``before_round`` is called before each round (the service times are measured there). With
    the server's ``pid``, each round also records where the CPU went per study (``cpu``: each
    process, the caller included, and the machine's busy, idle and steal shares).
    """
    order = [
        (i, level)
        for i in range(rounds)
        for level in (concurrencies if i % 2 == 0 else concurrencies[::-1])
    ]
    pooled: dict[int, list[latency.Tally]] = {c: [] for c in concurrencies}
    stats: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrencies}
    cpu: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrencies}

    async def one(concurrency: int) -> latency.Tally:
        async with AsyncAlnClient(url, retry=latency.NO_RETRY) as client:
            await latency.drive(
                client, studies, concurrency, settings["warmup_s"], settings["timeout_s"]
            )
            before = triton_stats.snapshot(url)
            meter = None if pid is None else processes.CpuMeter(pid).start()
            tally = await latency.drive(
                client, studies, concurrency, settings["duration_s"], settings["timeout_s"], 7
            )
            if meter is not None:
                cpu[concurrency].append(meter.split(len(tally.latencies_ms)).to_json())
            stats[concurrency].append(triton_stats.window(before, triton_stats.snapshot(url)))
        return tally

    for position, (round_index, concurrency) in enumerate(order):
        if before_round is not None and (position == 0 or order[position - 1][0] != round_index):
            before_round()
        tally = asyncio.run(one(concurrency))
        pooled[concurrency].append(tally)
        print(latency.format_level("plan", {"concurrency": concurrency, **tally.summary()}))
    rows = []
    for concurrency, tallies in pooled.items():
        values = [v for t in tallies for v in t.latencies_ms]
        seconds = sum(t.last_end - t.first_start for t in tallies)
        errors = sum(sum(t.errors.values()) for t in tallies)
        rows.append(
            {
                "concurrency": concurrency,
                "requests": len(values) + errors,
                "ok": len(values),
                "errors": errors,
                "elapsed_s": round(seconds, 2),
                "throughput_per_s": round(len(values) / seconds, 3),
                "latency_ms": latency.percentiles(values, (*latency.PERCENTILES, 100)),
                "rounds": [t.summary() for t in tallies],
                "triton": stats[concurrency],
                "cpu": cpu[concurrency],
            }
        )
    return rows


def _measure(args: argparse.Namespace) -> int:
    syntaxes = tuple(args.syntaxes.split(","))
    studies = workload.synthetic(syntaxes, per_syntax=service_times.PER_SYNTAX)
    settings = latency.sweep_settings(args)
    with servers.target_process(args) as (url, pid):
        with AlnClient(url) as client:
            client.wait_until_ready(timeout_s=30)
        # Service times before every round of the sweep and after the last, pooled, for the same
        # reason the sweep goes up and down: the machine's speed drifts.
        parts: list[ServiceTimes] = []

        def times() -> None:
            parts.append(
                service_times.measure(
                    url, syntaxes, requests=args.requests, repeats=args.repeats, pid=pid
                )
            )
            print(f"service times measured ({len(parts)} of {args.rounds + 1})", flush=True)

        levels = interleaved_sweep(
            url, studies, args.concurrency, args.rounds, settings, times, pid
        )
        times()
        repository = triton_stats.repository_configs(url, list(triton_stats.snapshot(url)))
    report = {
        "benchmark": "plan_measured",
        "machine": describe_machine(),
        "versions": versions(),
        "workload": studies.description,
        "service_times": service_times.pool(*parts).to_json(),
        "sweep": {
            "settings": {**settings, "rounds": args.rounds},
            "repository": repository,
            "levels": levels,
        },
    }
    out = write_result(report, "plan_measured", args.out)
    print(f"wrote {out}")
    return 0


def measured_path(path: Path | None) -> Path:
    """``--measured`` or this machine's committed ``plan_measured`` file."""
    return path or RESULTS / f"plan_measured-{machine_slug(describe_machine())}.json"


def _measured(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"No measured file at {path}; run `aln bench plan measure` first")
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("benchmark") != "plan_measured":
        raise SystemExit(f"{path} is a '{data.get('benchmark')}' result, not 'plan_measured'")
    return data


def measured_node(measured: dict[str, Any]) -> Node:
    """The replica the sweep ran on: its cores, served instances and batching, caller included."""
    times = ServiceTimes.from_json(measured["service_times"])
    groups = measured["sweep"]["repository"]["preprocess"].get("instance_group", [])
    return Node(
        cores=measured["machine"]["cores"],
        preprocess_instances=sum(int(g.get("count", 1)) for g in groups) or 1,
        engine_instances=times.batching["instances"],
        max_batch=times.batching["max_batch"],
        batch_delay_ms=times.batching["delay_ms"],
        caller_on_node=True,
    )


def sweep_mix(measured: dict[str, Any]) -> list[Study]:
    """The studies of the measured sweep in the order its callers took them."""
    per_syntax = measured["workload"]["studies"] // len(measured["workload"]["transfer_syntaxes"])
    auxiliary = bool(measured["workload"]["auxiliary"])
    return [
        Study(syntax, auxiliary)
        for syntax in measured["workload"]["transfer_syntaxes"]
        for _ in range(per_syntax)
    ]


def validate(
    measured: dict[str, Any],
    window_s: float,
    seed: int = 0,
    times: ServiceTimes | None = None,
) -> dict[str, Any]:
    """Simulate every level of the measured sweep; simulated beside measured, relative errors.

    ``times`` stands in for the measured service times (an ablation of one of them).
    """
    profile = Profile.measured(times or ServiceTimes.from_json(measured["service_times"]))
    node = measured_node(measured)
    mix = sweep_mix(measured)
    rows = []
    for level in measured["sweep"]["levels"]:
        concurrency = level["concurrency"]
        sim = capacity.closed_loop(node, profile, concurrency, mix, window_s=window_s, seed=seed)
        simulated = sim.summary()
        real = {
            "throughput_per_s": level["throughput_per_s"],
            "p50_ms": level["latency_ms"]["p50"],
            "p99_ms": level["latency_ms"]["p99"],
            # how far the measurement itself moves between rounds of the same level
            "rounds_p99_ms": [r["latency_ms"]["p99"] for r in level.get("rounds", [])],
        }
        errors = {
            key: round(simulated[key] / real[key] - 1, 4)
            for key in ("throughput_per_s", "p50_ms", "p99_ms")
        }
        rows.append(
            {"concurrency": concurrency, "measured": real, "simulated": simulated, "error": errors}
        )
    worst = max(abs(r["error"][k]) for r in rows for k in ("throughput_per_s", "p99_ms"))
    return {
        "node": asdict(node),
        "levels": rows,
        "worst_error": round(worst, 4),
        "tolerance": TOLERANCE,
        "passed": worst <= TOLERANCE,
    }


def without_engine_beside(measured: dict[str, Any], window_s: float) -> dict[str, Any] | None:
    """The validation again without the engine's time beside the studies' work.

    What that measurement adds to the model: the errors per concurrency with the engine's
    slowdown under load taken from every instance executing at once alone. None where the
    measurement has no ``engine_beside_ms``.
    """
    times = ServiceTimes.from_json(measured["service_times"])
    if not times.engine_beside_ms:
        return None
    result = validate(measured, window_s, times=replace(times, engine_beside_ms=None))
    return {
        "errors": {str(row["concurrency"]): row["error"] for row in result["levels"]},
        "worst_error": result["worst_error"],
    }


def _validate(args: argparse.Namespace) -> int:
    source = measured_path(args.measured)
    measured = _measured(source)
    result = validate(measured, args.window_s)
    ablation = without_engine_beside(measured, args.window_s)
    report = {
        "benchmark": "plan_validation",
        "machine": measured["machine"],
        "measured_file": source.name,
        "workload": measured["workload"],
        "settings": {"window_s": args.window_s},
        **result,
        "without_engine_beside": ablation,
    }
    for row in result["levels"]:
        m, s, e = row["measured"], row["simulated"], row["error"]
        print(
            f"c={row['concurrency']:<3} throughput {m['throughput_per_s']:6.2f} measured "
            f"{s['throughput_per_s']:6.2f} simulated ({e['throughput_per_s']:+.1%})   "
            f"p99 {m['p99_ms']:7.1f} measured {s['p99_ms']:7.1f} simulated ({e['p99_ms']:+.1%})"
        )
    if ablation is not None:
        print(
            f"without the engine's time beside the studies' work: worst error "
            f"{ablation['worst_error']:.1%}; per concurrency (throughput, p99) "
            + ", ".join(
                f"{c}: {e['throughput_per_s']:+.1%} {e['p99_ms']:+.1%}"
                for c, e in ablation["errors"].items()
            )
        )
    out = write_result(report, "plan_validation", args.out)
    plots.plot_plan_validation(report, out.with_suffix(".png"))
    verdict = "within" if result["passed"] else "NOT within"
    print(f"worst error {result['worst_error']:.1%}: {verdict} {TOLERANCE:.0%}; wrote {out}")
    return 0 if result["passed"] else 1


def network(
    measured: dict[str, Any], plan_data: dict[str, Any], window_s: float, seed: int = 0
) -> dict[str, Any]:
    """Size every node type of a plan for every scenario (:mod:`aln.benchmarks.sizing`)."""
    times = ServiceTimes.from_json(measured["service_times"])
    plan = sizing.parse_plan(plan_data, set(times.preprocess_ms))
    nodes, rows = [], []
    for kind in plan.nodes:
        profile = Profile.measured(times, kind.engine)
        rate, at_best, search = sizing.best_rate(kind.node, profile, plan, window_s, seed)
        nodes.append(
            {
                "name": kind.name,
                "node": asdict(kind.node),
                "engine_source": kind.engine_source,
                "engine_line_ms": [round(v, 3) for v in profile.engine.line()],
                "demand": {
                    k: round(v, 3) for k, v in sizing.demand(kind.node, profile, plan).items()
                },
                "best_per_s": round(rate, 3),
                "best_per_hour": round(rate * 3600),
                "at_best": at_best.summary(),
                "search": search,
            }
        )
        for scenario in plan.scenarios:
            replicas, run = sizing.replicas_for(
                kind.node, profile, plan, scenario.peak_per_s, rate, window_s, seed
            )
            load = scenario.peak_per_s / replicas
            rows.append(
                {
                    "scenario": scenario.name,
                    "node": kind.name,
                    "peak_per_hour": round(scenario.peak_per_s * 3600, 1),
                    "replicas": replicas,
                    "gpus": replicas * kind.node.gpus,
                    "per_replica_per_s": round(load, 4),
                    **{
                        k: v for k, v in run.summary().items() if k not in ("arrived", "bottleneck")
                    },
                    # what runs out first as the load per replica grows: the bound at its best
                    "bound_by": at_best.bottleneck,
                }
            )
    return {"plan": plan_data, "nodes": nodes, "table": rows}


def _network(args: argparse.Namespace) -> int:
    measured = _measured(measured_path(args.measured))
    try:
        result = network(measured, json.loads(args.plan.read_text()), args.window_s)
    except sizing.PlanError as exc:
        print(f"aln bench plan network: {args.plan}: {exc}", file=sys.stderr)
        return 2
    report = {
        "benchmark": "plan_network",
        "machine": measured["machine"],
        "settings": {"window_s": args.window_s, "plan_file": args.plan.name},
        **result,
    }
    for node in result["nodes"]:
        best = node["at_best"]
        print(
            f"{node['name']}: at most {node['best_per_s'] * 3600:.0f} studies/h per replica "
            f"within the p99 budget; there: {best['bottleneck']} bound (cores "
            f"{best['cpu_busy']:.0%}, GPU {best['gpu_busy'] or 0:.0%}, connections "
            f"{best['connection_busy']:.0%} busy)"
        )
    print(
        f"{'scenario':<34} {'node':<30} {'peak/h':>7} {'repl':>4} {'GPUs':>4} {'p99 ms':>8} "
        f"{'cores':>6} {'GPU':>6}  bound by"
    )
    for row in result["table"]:
        gpu = "-" if row["gpu_busy"] is None else f"{row['gpu_busy']:.0%}"
        print(
            f"{row['scenario'][:34]:<34} {row['node'][:30]:<30} {row['peak_per_hour']:>7.0f} "
            f"{row['replicas']:>4} {row['gpus']:>4} {row['p99_ms']:>8.1f} "
            f"{row['cpu_busy']:>6.0%} {gpu:>6}  {row['bound_by']}"
        )
    out = write_result(report, "plan_network", args.out)
    plots.plot_plan_network(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench plan", description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    measure = steps.add_parser("measure", help="service times and a latency sweep of one server")
    servers.add_arguments(measure)
    latency.add_sweep_arguments(measure)
    measure.add_argument("--syntaxes", default=",".join(MEASURE_SYNTAXES))
    measure.add_argument("--requests", type=int, default=30, help="per syntax, one at a time")
    measure.add_argument("--repeats", type=int, default=5, help="per engine batch size")
    measure.add_argument(
        "--rounds", type=int, default=3, help="sweeps, up the levels then down, pooled"
    )
    measure.add_argument("--out", type=Path)
    measure.set_defaults(run=_measure)
    check = steps.add_parser("validate", help="simulate the measured sweep; errors per level")
    check.add_argument("--measured", type=Path, help="plan_measured file (default: this machine's)")
    check.add_argument("--window-s", type=float, default=300.0, help="simulated per level")
    check.add_argument("--out", type=Path)
    check.set_defaults(run=_validate)
    size = steps.add_parser("network", help="replicas and GPUs for a network's peak hour")
    size.add_argument("plan", type=Path, help="plan file (see examples/capacity-plan.json)")
    size.add_argument("--measured", type=Path, help="plan_measured file (default: this machine's)")
    size.add_argument("--window-s", type=float, default=120.0, help="simulated per run")
    size.add_argument("--out", type=Path)
    size.set_defaults(run=_network)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
