"""Serving overhead: served throughput as a share of the engine's, and where the CPU goes.

``aln bench overhead [--transfer-syntax explicit,jpeg2000] [--concurrency 8] [--duration-s 30]``
starts the demo ensemble and, for each transfer syntax separately, (1) drives it closed loop at
``--concurrency``, recording throughput, Triton's per-model statistics and the CPU time every
process spent (load generator, Triton core, each Python-backend model), then (2) times the very
engine the server runs (``backbone_primary/1/model.onnx`` through
:class:`aln.serving.engine.OnnxEngine`, as many sessions as served instances, same threads and
options) in this process, alone, at the mean batch size the dynamic batcher formed during the
run. The fraction served / engine-only is the share of the engine's throughput that survives
Triton, gRPC and preprocessing; the CPU breakdown (core-milliseconds per study) says where the
rest went.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from aln.benchmarks import latency, processes, servers, triton_stats, workload
from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.preprocessing import contract


def engine_only_img_s(repository: Path, batch: int, repeats: int = 5) -> float:
    """Images/s of the served primary backbone alone in this process at ``batch``.

    Runs as served: as many ONNX Runtime sessions as the model has instances, each with the
    served threads and options, all busy at once (ONNX Runtime releases the GIL), after one
    warm-up run each; returns their aggregate rate.
    """
    from aln.serving.engine import OnnxEngine
    from aln.serving.spec import EngineSettings

    config = served_backbone_config(repository)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    engines = [
        OnnxEngine(
            repository / contract.BACKBONE_PRIMARY / "1" / "model.onnx",
            EngineSettings.from_parameters(parameters),
        )
        for _ in range(max(1, sum(group.count for group in config.instance_group)))
    ]
    image = np.random.default_rng(0).standard_normal(
        (batch, contract.IMAGE_CHANNELS, contract.IMAGE_SIZE, contract.IMAGE_SIZE)
    )
    feed = {engines[0].input_names[0]: image.astype(np.float32)}

    def work(engine: Any) -> None:
        for _ in range(repeats):
            engine.session.run(None, feed)

    for engine in engines:
        engine.session.run(None, feed)
    threads = [threading.Thread(target=work, args=(engine,)) for engine in engines]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(engines) * repeats * batch / (time.perf_counter() - start)


def served_backbone_config(repository: Path) -> Any:
    """The served primary backbone's ``config.pbtxt`` as a ``ModelConfig``."""
    from aln.export.repository import parse_pbtxt

    return parse_pbtxt((repository / contract.BACKBONE_PRIMARY / "config.pbtxt").read_text())


def measure(
    served: servers.Running,
    studies: workload.Workload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """One transfer syntax: served throughput, engine-only throughput, CPU per component."""
    assert served.repository is not None
    asyncio.run(latency.closed_loop(served.url, studies, concurrency, warmup_s))
    stats_before = triton_stats.snapshot(served.url)
    cpu_before = processes.cpu_seconds(served.pid)
    client_before = processes.own_cpu_seconds()
    tally = asyncio.run(latency.closed_loop(served.url, studies, concurrency, duration_s))
    client_s = processes.own_cpu_seconds() - client_before
    cpu_after = processes.cpu_seconds(served.pid)
    stats = triton_stats.window(stats_before, triton_stats.snapshot(served.url))
    level = {"concurrency": concurrency, **tally.summary()}
    ok = max(level["ok"], 1)
    core_ms = {"load generator (client)": round(client_s / ok * 1000, 1)}
    for name, seconds in sorted(cpu_after.items()):
        core_ms[name] = round((seconds - cpu_before.get(name, 0.0)) / ok * 1000, 1)
    mean_batch = stats[contract.BACKBONE_PRIMARY]["mean_batch"]
    batch = max(1, round(mean_batch))
    engine = engine_only_img_s(served.repository, batch)
    return {
        "workload": studies.description,
        "served": level,
        "triton": stats,
        "backbone_mean_batch": mean_batch,
        "engine_only_batch": batch,
        "engine_only_img_s": round(engine, 2),
        "served_fraction_of_engine": round(level["throughput_per_s"] / engine, 3),
        "cpu_core_ms_per_study": core_ms,
        "cpu_core_ms_per_study_total": round(sum(core_ms.values()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench overhead", description=__doc__.splitlines()[0])
    servers.add_arguments(parser, url=False)
    parser.add_argument("--transfer-syntax", default="explicit,jpeg2000")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with (
        servers.workdir(args) as work,
        servers.ensemble(servers.checkpoint_of(args, work), work) as served,
    ):
        for syntax in args.transfer_syntax.split(","):
            row = measure(
                served,
                workload.synthetic((syntax,)),
                args.concurrency,
                args.duration_s,
                args.warmup_s,
            )
            rows.append({"transfer_syntax": syntax, **row})
            print(
                f"{syntax}: served {row['served']['throughput_per_s']:.2f} studies/s, engine "
                f"alone {row['engine_only_img_s']:.2f} img/s at batch "
                f"{row['engine_only_batch']} -> {row['served_fraction_of_engine']:.0%}; "
                f"CPU core-ms/study {row['cpu_core_ms_per_study']}",
                flush=True,
            )
        configs = triton_stats.repository_configs(served.url, list(rows[0]["triton"]))
        server_versions = versions(served.url)
    report = {
        "benchmark": "overhead",
        "machine": describe_machine(),
        "versions": server_versions,
        "repository": configs,
        "results": rows,
    }
    out = write_result(report, "overhead", args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
