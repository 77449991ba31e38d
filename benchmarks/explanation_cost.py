"""What an explanation costs: its latency, and what a 10% mix does to predictions.

The mix: 10% of requests ask for an explanation; measured are prediction throughput and p99.
For each occlusion chunk size (occluded crops per backbone request: a quarter of a backbone
batch, and the whole batch as served; the ablation of how explanations share the engines) a
server is started with that setting and measured in three steps, one after another:

1. alone: serial predictions, then serial explanations (no other load);
2. predictions only: a closed loop of ``--concurrency`` workers for ``--duration-s``;
3. the mix: the same loop, where every ``--every``-th request (10% by default) asks for an
   explanation instead (an explanation also answers the prediction). Plain predictions' p99 is
   reported apart from the explanations'.

    aln bench explain [--checkpoint CKPT] [--grid 8] [--concurrency 4] [--duration-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from aln.benchmarks import servers
from aln.benchmarks import workload as workloads
from aln.benchmarks.latency import NO_RETRY, Tally
from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.client import AlnClientError, AsyncAlnClient
from aln.serving.occlusion import DEFAULT_GRID, check_grid
from aln.serving.spec import spec_default


async def _alone(
    client: AsyncAlnClient, load: workloads.Workload, grid: int, predictions: int, explains: int
) -> dict[str, Any]:
    predicted, explained = Tally(), Tally()
    for i in range(predictions):
        study = load.study(i)
        start = time.perf_counter()
        await client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
        predicted.record(start, time.perf_counter(), None)
    for i in range(explains):
        study = load.study(i)
        start = time.perf_counter()
        await client.explain(study.primary, study.clinical, auxiliary=study.auxiliary, grid=grid)
        explained.record(start, time.perf_counter(), None)
    return {"prediction": predicted.summary(), "explanation": explained.summary()}


async def _mix(
    client: AsyncAlnClient,
    load: workloads.Workload,
    grid: int,
    concurrency: int,
    duration_s: float,
    every: int,
) -> dict[str, Any]:
    """A closed loop where request ``i`` is an explanation when ``every`` divides ``i``."""
    predicted, explained = Tally(), Tally()
    stop = time.perf_counter() + duration_s
    counter = iter(range(1, 1 << 62))

    async def worker() -> None:
        while time.perf_counter() < stop:
            i = next(counter)
            study = load.study(i)
            explain = every > 0 and i % every == 0
            start = time.perf_counter()
            error = None
            try:
                if explain:
                    await client.explain(
                        study.primary, study.clinical, auxiliary=study.auxiliary, grid=grid
                    )
                else:
                    await client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
            except AlnClientError as exc:
                error = exc
            (explained if explain else predicted).record(start, time.perf_counter(), error)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    plain, explanations = predicted.summary(), explained.summary()
    window = max(predicted.last_end, explained.last_end) - min(
        predicted.first_start, explained.first_start
    )
    return {
        "explanation_share": round(1 / every, 3) if every else 0.0,
        "studies_per_s": round((plain["ok"] + explanations["ok"]) / window, 3),
        "predictions": plain,
        "explanations": explanations,
    }


async def _measure(url: str, args: argparse.Namespace, load: workloads.Workload) -> dict[str, Any]:
    async with AsyncAlnClient(url, retry=NO_RETRY, timeout_s=args.timeout_s) as client:
        await _mix(client, load, args.grid, args.concurrency, args.warmup_s, 0)
        alone = await _alone(client, load, args.grid, args.alone_predictions, args.alone_explains)
        only = await _mix(client, load, args.grid, args.concurrency, args.duration_s, 0)
        mixed = await _mix(client, load, args.grid, args.concurrency, args.duration_s, args.every)
    p99 = (only["predictions"]["latency_ms"] or {}).get("p99")
    p99_mixed = (mixed["predictions"]["latency_ms"] or {}).get("p99")
    return {
        "alone": alone,
        "predictions_only": only,
        "mix": mixed,
        "throughput_ratio": round(mixed["studies_per_s"] / only["studies_per_s"], 3),
        "prediction_p99_added_ms": None
        if p99 is None or p99_mixed is None
        else round(p99_mixed - p99, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench explain", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    workloads.add_arguments(parser)
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID)
    parser.add_argument(
        "--chunks",
        default=f"8,{spec_default('max_batch')}",
        help="occlusion chunk sizes to serve, comma-separated (default: a quarter batch, and "
        "the whole batch the backbones take, as served)",
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--every", type=int, default=10, help="one request in N is explained")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--alone-predictions", type=int, default=10)
    parser.add_argument("--alone-explains", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.grid = check_grid(args.grid)
    load = workloads.from_arguments(args)
    report: dict[str, Any] = {
        "benchmark": "explain",
        "machine": describe_machine(),
        "workload": load.description,
        "grid": args.grid,
        "concurrency": args.concurrency,
        "every": args.every,
        "duration_s": args.duration_s,
        "chunks": {},
    }
    for chunk in (int(c) for c in args.chunks.split(",")):
        with servers.target(args, {"explain_chunk": chunk}) as url:
            report.setdefault("versions", versions(url))
            row = asyncio.run(_measure(url, args, load))
        report["chunks"][str(chunk)] = row
        alone = row["alone"]
        print(
            f"chunk {chunk}: alone prediction p50 "
            f"{alone['prediction']['latency_ms']['p50']} ms, explanation p50 "
            f"{alone['explanation']['latency_ms']['p50']} ms; load "
            f"{row['predictions_only']['studies_per_s']} -> {row['mix']['studies_per_s']} "
            f"studies/s with {1 / args.every:.0%} explained; "
            f"prediction p99 {row['predictions_only']['predictions']['latency_ms']['p99']} -> "
            f"{row['mix']['predictions']['latency_ms']['p99']} ms"
        )
    out = write_result(report, "explain", args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
