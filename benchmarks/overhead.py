"""Serving overhead: the served ensemble against the same work done in one process.

``aln bench overhead [--transfer-syntax explicit,jpeg2000] [--concurrency 8] [--duration-s 30]``
starts the demo ensemble and, for each transfer syntax:

1. drives it closed loop at ``--concurrency`` twice, the DICOM bytes sent over gRPC and then
   through Triton system shared memory, recording throughput, Triton's per-model statistics and
   the CPU time every process spent (load generator, Triton core, each Python-backend model);
2. does the same work in this process with no server (:func:`one_process`): the served
   ``preprocess`` code on the same request arrays, then the very engines the server runs (same
   files, same settings, one set per lane) at the mean batch size the dynamic batcher formed, in
   as many parallel lanes as the server has preprocessing instances.

Serving overhead is then Triton, gRPC and inter-process copies only: the served throughput as a
share of the one-process throughput, and the CPU per study of the processes that are not the
engines (load generator, Triton core, ``preprocess``) next to the one-process preprocessing.
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

ENGINE_MODELS = (contract.BACKBONE_PRIMARY, contract.BACKBONE_AUXILIARY, contract.FUSION_HEAD)
TRANSPORTS = {"grpc": False, "shared_memory": True}
"""How the load generator sends the DICOM bytes: name -> ``shared_memory`` of the client."""
NON_ENGINE = (processes.CALLER, "tritonserver", contract.PREPROCESS)
"""The processes whose CPU per study is the cost of serving around the engines."""


def served_config(repository: Path, model: str) -> Any:
    """A served model's ``config.pbtxt`` as a ``ModelConfig``."""
    from aln.export.repository import parse_pbtxt

    return parse_pbtxt((repository / model / "config.pbtxt").read_text())


def _served_engines(repository: Path) -> dict[str, Any]:
    """The engines of the repository, loaded as the server loads them (files and settings)."""
    from aln.serving.engine import load_engine
    from aln.serving.spec import EngineSettings

    engines = {}
    for model in ENGINE_MODELS:
        config = served_config(repository, model)
        parameters = {key: value.string_value for key, value in config.parameters.items()}
        engines[model] = load_engine(
            repository / model / "1", EngineSettings.from_parameters(parameters)
        )
    return engines


def one_process(
    repository: Path, studies: workload.Workload, batch: int, duration_s: float
) -> dict[str, Any]:
    """The served work without a server: ``preprocess``'s code, then the served engines.

    Each lane (one per served ``preprocess`` instance, in threads: ONNX Runtime, OpenVINO and the
    decoders release the GIL) turns ``batch`` studies' request arrays into tensors with
    :class:`aln.preprocessing.serving.StudyPreprocessor`, then runs both backbones and the fusion
    head on the batch with engines of its own. Returns throughput and CPU per study, split into
    preprocessing and engines by each lane's thread CPU time.
    """
    from aln.client import _request
    from aln.preprocessing.manifest import read_manifest
    from aln.preprocessing.serving import RawRequest, StudyPreprocessor

    lanes = max(
        1, sum(g.count for g in served_config(repository, contract.PREPROCESS).instance_group)
    )
    preprocessor = StudyPreprocessor(read_manifest(repository / contract.PREPROCESS / "1"))
    requests = [_request.build_arrays(s.primary, s.clinical, s.auxiliary) for s in studies.studies]
    image, embedding = contract.BACKBONE_INPUT.name, contract.BACKBONE_OUTPUT.name

    lane_engines = [_served_engines(repository) for _ in range(lanes)]  # loaded before timing

    def lane(index: int, stop: float, tally: dict[str, float]) -> None:
        engines = lane_engines[index]
        i = index
        while time.perf_counter() < stop:
            t0 = time.thread_time()
            tensors = []
            for _ in range(batch):
                arrays = requests[i % len(requests)]
                tensors.append(preprocessor(RawRequest.from_arrays(arrays)))
                i += 1
            t1 = time.thread_time()
            primary = engines[contract.BACKBONE_PRIMARY].run(
                {image: np.stack([t.primary_image for t in tensors])}
            )[embedding]
            auxiliary = engines[contract.BACKBONE_AUXILIARY].run(
                {image: np.stack([t.auxiliary_image for t in tensors])}
            )[embedding]
            engines[contract.FUSION_HEAD].run(
                {
                    contract.PRIMARY_EMBEDDING.name: primary,
                    contract.AUXILIARY_EMBEDDING.name: auxiliary,
                    contract.AUXILIARY_PRESENT.name: np.stack(
                        [t.auxiliary_present for t in tensors]
                    ),
                    contract.CLINICAL_VECTOR.name: np.stack([t.clinical_vector for t in tensors]),
                }
            )
            tally["preprocess_s"] += t1 - t0
            tally["engines_s"] += time.thread_time() - t1
            tally["studies"] += batch

    def run(duration: float) -> tuple[list[dict[str, float]], float, float]:
        tallies = [{"preprocess_s": 0.0, "engines_s": 0.0, "studies": 0.0} for _ in range(lanes)]
        stop = time.perf_counter() + duration
        threads = [threading.Thread(target=lane, args=(k, stop, tallies[k])) for k in range(lanes)]
        cpu, wall = time.process_time(), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return tallies, time.process_time() - cpu, time.perf_counter() - wall

    run(min(5.0, duration_s))  # warm-up: first runs, caches
    tallies, cpu_s, wall_s = run(duration_s)
    done = max(sum(t["studies"] for t in tallies), 1)
    return {
        "lanes": lanes,
        "batch": batch,
        "studies": int(done),
        "throughput_per_s": round(done / wall_s, 3),
        "cpu_core_ms_per_study": {
            "preprocess": round(sum(t["preprocess_s"] for t in tallies) / done * 1000, 1),
            "engines": round(sum(t["engines_s"] for t in tallies) / done * 1000, 1),
            "total": round(cpu_s / done * 1000, 1),
        },
    }


def served(
    running: servers.Running,
    studies: workload.Workload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    shared_memory: bool,
) -> dict[str, Any]:
    """Closed loop on the server: throughput, Triton statistics, CPU per study per process."""
    asyncio.run(
        latency.closed_loop(
            running.url, studies, concurrency, warmup_s, shared_memory=shared_memory
        )
    )
    stats_before = triton_stats.snapshot(running.url)
    meter = processes.CpuMeter(running.pid).start()
    tally = asyncio.run(
        latency.closed_loop(
            running.url, studies, concurrency, duration_s, shared_memory=shared_memory
        )
    )
    level = {"concurrency": concurrency, **tally.summary()}
    cpu = meter.split(level["ok"])
    stats = triton_stats.window(stats_before, triton_stats.snapshot(running.url))
    core_ms = cpu.core_ms_per_item
    return {
        "served": level,
        "triton": stats,
        "backbone_mean_batch": stats[contract.BACKBONE_PRIMARY]["mean_batch"],
        "cpu_core_ms_per_study": core_ms,
        "non_engine_core_ms_per_study": round(sum(core_ms.get(n, 0.0) for n in NON_ENGINE), 1),
        "cpu_core_ms_per_study_total": cpu.total_ms,
    }


def measure(
    running: servers.Running,
    studies: workload.Workload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """One transfer syntax: served over gRPC and over shared memory, then in one process."""
    assert running.repository is not None
    transports = {
        name: served(running, studies, concurrency, duration_s, warmup_s, shared)
        for name, shared in TRANSPORTS.items()
    }
    batch = max(1, round(transports["shared_memory"]["backbone_mean_batch"]))
    alone = one_process(running.repository, studies, batch, duration_s)
    for row in transports.values():
        row["served_fraction_of_one_process"] = round(
            row["served"]["throughput_per_s"] / alone["throughput_per_s"], 3
        )
    return {"workload": studies.description, "transports": transports, "one_process": alone}


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
        servers.ensemble(servers.checkpoint_of(args, work), work) as running,
    ):
        for syntax in args.transfer_syntax.split(","):
            row = measure(
                running,
                workload.synthetic((syntax,)),
                args.concurrency,
                args.duration_s,
                args.warmup_s,
            )
            rows.append({"transfer_syntax": syntax, **row})
            alone = row["one_process"]
            print(
                f"{syntax}: one process {alone['throughput_per_s']:.2f} studies/s "
                f"(batch {alone['batch']}, {alone['lanes']} lanes), CPU core-ms/study "
                f"{alone['cpu_core_ms_per_study']}",
                flush=True,
            )
            for name, t in row["transports"].items():
                print(
                    f"  served over {name}: {t['served']['throughput_per_s']:.2f} studies/s "
                    f"({t['served_fraction_of_one_process']:.0%} of one process), non-engine "
                    f"CPU {t['non_engine_core_ms_per_study']} core-ms/study; "
                    f"{t['cpu_core_ms_per_study']}",
                    flush=True,
                )
        first = rows[0]["transports"]["grpc"]["triton"]
        configs = triton_stats.repository_configs(running.url, list(first))
        server_versions = versions(running.url)
    report = {
        "benchmark": "overhead",
        "machine": describe_machine(),
        "versions": server_versions,
        "repository": configs,
        "settings": {
            "concurrency": args.concurrency,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
        },
        "results": rows,
    }
    out = write_result(report, "overhead", args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
