"""Service times of a served pipeline, one request at a time, from Triton's own statistics.

The capacity model (:mod:`aln.benchmarks.capacity`) is built from what this measures on a running
server with nothing else in flight:

- per transfer syntax, every request's time in ``preprocess`` (input, execution, output), in the
  fusion head (queue included), and outside the models (the caller's latency minus the time in
  each step: client encoding, gRPC, the ensemble's own bookkeeping, copies);
- the engine time of ``backbone_primary`` per batch size, from batches sent to it directly, and
  its time per batch of one while every instance executes at once (what sharing the machine's
  caches and memory bandwidth costs it);
- the load generator's own CPU time per request (the part of "outside" that is the caller's);
- where the server is started here (its process known), the CPU time per request of each of its
  processes (the Triton core, each model's stubs) and of the caller, from ``/proc``, over the same
  requests sent again without the statistics calls in between: what one study costs the cores,
  beside what the steps' times say;
- the per-request times in ``preprocess`` and outside the models again, while the auxiliary
  backbone executes batches of one back to back beside them (the sweep's studies carry no
  auxiliary image, so that model is otherwise idle): what a study's own work costs while the
  other cores run an engine, the usual neighbour under load; and, the other way round, that
  engine's time per batch beside the studies' work.

Each figure is the difference of Triton's cumulative counters around one request, so it is that
request's own time, not a mean: the model draws from these samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from aln.benchmarks import processes, triton_stats, workload
from aln.client import AsyncAlnClient
from aln.preprocessing import contract

STEP_PHASES = ("compute_input", "compute_infer", "compute_output")
"""A model's own work on a request (its queue left out)."""
STAGGER_S = 0.02
"""Gap between the concurrent engine calls of a round: past the batcher's delay, well within
an execution."""
PER_SYNTAX = 2
"""Synthetic studies per transfer syntax (vendors in turn), here and in the sweep checked."""


@dataclass(frozen=True)
class ServiceTimes:
    """Per-request service times of one served repository on one machine, in ms.

    Attributes:
        preprocess_ms: Per transfer syntax, each request's time in ``preprocess``.
        fusion_ms: Each request's time in ``fusion_head``, its batching delay included.
        outside_ms: Per transfer syntax (the DICOM sizes differ), each request's latency at the
            caller minus its time in the steps (the primary engine's batching delay included,
            which the model adds back).
        engine_ms: Per batch size (as a string, JSON keys), each execution of the primary engine.
        engine_contended_ms: Mean time of a batch of one per round of every engine instance
            executing one at once.
        client_cpu_ms: Per transfer syntax, the caller's CPU time per request (mean).
        preprocess_beside_ms: As ``preprocess_ms``, measured beside a busy engine (None in files
            measured before this was).
        outside_beside_ms: As ``outside_ms``, measured beside a busy engine (likewise).
        engine_beside_ms: Mean time of the busy engine's batches of one while the studies'
            ``*_beside_ms`` were measured: the engine beside a study's own work (likewise).
        batching: The served dynamic batching of the engine: instances, largest batch, delay.
        cpu_ms: Per transfer syntax, core-ms per request of each process (a
            :class:`~aln.benchmarks.processes.CpuSplit`'s ``core_ms_per_item``), one at a time
            (None where the server's process was not known, and in older files).
    """

    preprocess_ms: dict[str, list[float]]
    fusion_ms: list[float]
    outside_ms: dict[str, list[float]]
    engine_ms: dict[str, list[float]]
    engine_contended_ms: list[float]
    client_cpu_ms: dict[str, float]
    preprocess_beside_ms: dict[str, list[float]] | None
    outside_beside_ms: dict[str, list[float]] | None
    batching: dict[str, Any]
    cpu_ms: dict[str, dict[str, float]] | None = None
    engine_beside_ms: list[float] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceTimes:
        """The inverse of :meth:`to_json` (a result file's ``service_times``)."""
        optional = ("preprocess_beside_ms", "outside_beside_ms", "cpu_ms", "engine_beside_ms")
        fields: dict[str, Any] = {
            name: data.get(name) if name in optional else data[name]
            for name in cls.__dataclass_fields__
        }
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, every sample rounded to 0.01 ms."""
        out = asdict(self)
        for key in (
            "preprocess_ms",
            "outside_ms",
            "engine_ms",
            "preprocess_beside_ms",
            "outside_beside_ms",
        ):
            if out[key] is not None:
                out[key] = {k: [round(v, 2) for v in vs] for k, vs in out[key].items()}
        for key in ("fusion_ms", "engine_contended_ms", "engine_beside_ms"):
            if out[key] is not None:
                out[key] = [round(v, 2) for v in out[key]]
        out["client_cpu_ms"] = {k: round(v, 2) for k, v in out["client_cpu_ms"].items()}
        return out


def model_ms(
    before: dict[str, Any],
    after: dict[str, Any],
    model: str,
    phases: tuple[str, ...] = STEP_PHASES,
) -> float:
    """Milliseconds ``model`` spent in ``phases`` between two :func:`triton_stats.snapshot`."""
    now = after.get(model, {}).get("inference_stats", {})
    then = before.get(model, {}).get("inference_stats", {})
    ns = sum(int(now.get(p, {}).get("ns", 0)) - int(then.get(p, {}).get("ns", 0)) for p in phases)
    return ns / 1e6


def pool(*parts: ServiceTimes) -> ServiceTimes:
    """Several measurements of the same server as one (samples joined, CPU means averaged)."""
    first = parts[0]

    def joined(name: str) -> dict[str, list[float]]:
        keys = getattr(first, name)
        return {k: [v for part in parts for v in getattr(part, name)[k]] for k in keys}

    def chained(name: str) -> list[float]:
        return [v for part in parts for v in getattr(part, name)]

    def averaged(name: str) -> dict[str, dict[str, float]]:
        """Per syntax and process, the mean (a process absent from one measurement spent 0)."""
        splits = [getattr(part, name) for part in parts]
        return {
            key: {
                process: round(
                    float(np.mean([split[key].get(process, 0.0) for split in splits])), 1
                )
                for process in sorted({p for split in splits for p in split[key]})
            }
            for key in splits[0]
        }

    def if_all(name: str, pooled: Callable[[str], Any]) -> Any:
        return pooled(name) if all(getattr(part, name) is not None for part in parts) else None

    return ServiceTimes(
        preprocess_ms=joined("preprocess_ms"),
        fusion_ms=chained("fusion_ms"),
        outside_ms=joined("outside_ms"),
        engine_ms=joined("engine_ms"),
        engine_contended_ms=chained("engine_contended_ms"),
        client_cpu_ms={
            k: float(np.mean([part.client_cpu_ms[k] for part in parts]))
            for k in first.client_cpu_ms
        },
        preprocess_beside_ms=if_all("preprocess_beside_ms", joined),
        outside_beside_ms=if_all("outside_beside_ms", joined),
        batching=first.batching,
        cpu_ms=if_all("cpu_ms", averaged),
        engine_beside_ms=if_all("engine_beside_ms", chained),
    )


def batching_of(url: str) -> dict[str, Any]:
    """The primary engine's served batching: instances, largest batch, queue delay (ms)."""
    config = triton_stats.repository_configs(url, [contract.BACKBONE_PRIMARY])[
        contract.BACKBONE_PRIMARY
    ]
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", []))
    batcher = config.get("dynamic_batching", {})
    return {
        "instances": instances,
        "max_batch": int(config.get("max_batch_size", 1)),
        "delay_ms": int(batcher.get("max_queue_delay_microseconds", 0)) / 1000,
    }


def measure_requests(
    url: str,
    syntaxes: tuple[str, ...],
    requests: int,
    seed: int = 0,
    *,
    beside_engine: bool = False,
    pid: int | None = None,
) -> dict[str, Any]:
    """Send ``requests`` studies of each syntax one at a time; per-request times by stage.

    Through the asyncio client, as the latency sweep sends them, so the caller's share is the same.
    With ``beside_engine``, the auxiliary backbone executes batches of one back to back
    meanwhile (:func:`busy_engine`); the studies must then carry no auxiliary image. With the
    server's ``pid``, the same studies are sent again, one at a time with nothing else on the
    server, for each process's CPU time per request (``cpu_ms``).
    """
    with busy_engine(url) if beside_engine else contextlib.nullcontext():
        return asyncio.run(_measure_requests(url, syntaxes, requests, seed, beside_engine, pid))


@contextlib.contextmanager
def busy_engine(url: str) -> Iterator[None]:
    """Keeps one instance of the auxiliary backbone executing batches of one, back to back.

    The calls start on entry and stop on exit, the last one finishing first; a call that failed
    is raised there (the times measured meanwhile were not beside a busy engine).
    """
    stop = threading.Event()
    failed: list[BaseException] = []
    images = np.random.default_rng(2).standard_normal(
        (1, *contract.BACKBONE_INPUT.dims), dtype=np.float32
    )

    def run() -> None:
        with grpcclient.InferenceServerClient(url) as client:
            tensor = _engine_input(images)
            while not stop.is_set():
                try:
                    client.infer(contract.BACKBONE_AUXILIARY, [tensor])
                except Exception as exc:  # handed to the caller on exit
                    failed.append(exc)
                    return

    thread = threading.Thread(target=run, name="busy-engine", daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # the first execution under way
        yield
    finally:
        stop.set()
        thread.join()
    if failed:
        raise RuntimeError(f"The busy engine's calls failed: {failed[0]}") from failed[0]


async def _measure_requests(
    url: str,
    syntaxes: tuple[str, ...],
    requests: int,
    seed: int,
    beside_engine: bool,
    pid: int | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "preprocess_ms": {},
        "fusion_ms": [],
        "outside_ms": {},
        "client_cpu_ms": {},
        "cpu_ms": None if pid is None else {},
    }
    steps = (contract.PREPROCESS, contract.BACKBONE_PRIMARY, contract.BACKBONE_AUXILIARY)
    answering = (*steps, contract.FUSION_HEAD)  # every study passes through each once
    first, sent = triton_stats.snapshot(url) if beside_engine else {}, 0
    async with AsyncAlnClient(url) as client:
        for syntax in syntaxes:
            studies = workload.synthetic((syntax,), per_syntax=PER_SYNTAX, seed=seed)
            warm_up = studies.studies[:2]
            for warm in warm_up:
                await client.predict(warm.primary, warm.clinical)
            sent += len(warm_up) + requests
            samples, outside, cpu_s = [], [], 0.0
            for i in range(requests):
                study = studies.study(i)
                before = triton_stats.snapshot(url)
                cpu0, start = time.process_time(), time.perf_counter()
                await client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
                latency_ms = (time.perf_counter() - start) * 1000
                cpu_s += time.process_time() - cpu0
                after = triton_stats.settled(url, before, dict.fromkeys(answering, 1))
                step = {m: model_ms(before, after, m, ("queue", *STEP_PHASES)) for m in steps}
                fusion = model_ms(before, after, contract.FUSION_HEAD, ("queue", *STEP_PHASES))
                samples.append(model_ms(before, after, contract.PREPROCESS))
                out["fusion_ms"].append(fusion)
                # The backbones run side by side: the ensemble waits for the slower one (beside
                # the busy engine, the auxiliary's counters are that engine's, not the study's).
                engines = [step[contract.BACKBONE_PRIMARY]]
                if not beside_engine:
                    engines.append(step[contract.BACKBONE_AUXILIARY])
                inside = step[contract.PREPROCESS] + max(engines) + fusion
                outside.append(max(latency_ms - inside, 0.0))
            out["preprocess_ms"][syntax] = samples
            out["outside_ms"][syntax] = outside
            out["client_cpu_ms"][syntax] = cpu_s / requests * 1000
            if pid is not None:
                meter = processes.CpuMeter(pid).start()
                for i in range(requests):
                    study = studies.study(i)
                    await client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
                out["cpu_ms"][syntax] = meter.split(requests).core_ms_per_item
    if beside_engine:
        out["engine_beside_ms"] = [busy_engine_ms(first, triton_stats.snapshot(url), sent)]
    return out


def busy_engine_ms(before: dict[str, Any], after: dict[str, Any], studies: int) -> float:
    """Mean execution time of :func:`busy_engine`'s batches between two snapshots.

    The auxiliary backbone's executions there are the busy engine's and one per study sent
    meanwhile (its all-zero rows, skipped in about a millisecond: their time is left in, well
    under 1% of the total).
    """
    model = contract.BACKBONE_AUXILIARY
    executions = int(after[model]["execution_count"]) - int(before[model]["execution_count"])
    if executions <= studies:
        raise RuntimeError(
            f"The busy engine executed no batch of its own ({executions} executions of "
            f"{model} for {studies} studies)"
        )
    return model_ms(before, after, model) / (executions - studies)


def _engine_input(images: np.ndarray[Any, Any]) -> grpcclient.InferInput:
    """A batch of images as the primary engine's input tensor."""
    spec = contract.BACKBONE_INPUT
    tensor = grpcclient.InferInput(spec.name, list(images.shape), spec.dtype)
    tensor.set_data_from_numpy(images)
    return tensor


def measure_engine(url: str, batch_sizes: tuple[int, ...], repeats: int) -> dict[str, list[float]]:
    """Each batch size sent ``repeats`` times straight to the primary engine: its execution time."""
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {}
    spec = contract.BACKBONE_INPUT
    with grpcclient.InferenceServerClient(url) as client:
        for size in batch_sizes:
            images = rng.standard_normal((size, *spec.dims), dtype=np.float32)
            tensor = _engine_input(images)
            client.infer(contract.BACKBONE_PRIMARY, [tensor])  # warm this shape
            samples = []
            for _ in range(repeats):
                before = triton_stats.snapshot(url)
                client.infer(contract.BACKBONE_PRIMARY, [tensor])
                after = triton_stats.settled(url, before, {contract.BACKBONE_PRIMARY: 1})
                samples.append(model_ms(before, after, contract.BACKBONE_PRIMARY))
            out[str(size)] = samples
    return out


def measure_engine_contended(url: str, instances: int, repeats: int) -> list[float]:
    """``repeats`` rounds of ``instances`` batches of one sent at once: mean time per execution.

    Triton runs them on every instance together, so each round shows the engine's time while
    the others compete for the same caches and memory bandwidth.
    """
    spec = contract.BACKBONE_INPUT
    images = np.random.default_rng(1).standard_normal((1, *spec.dims), dtype=np.float32)

    def one(turn: int) -> None:
        time.sleep(turn * STAGGER_S)  # one after another, so the batcher does not merge them
        with grpcclient.InferenceServerClient(url) as client:
            tensor = _engine_input(images)
            client.infer(contract.BACKBONE_PRIMARY, [tensor])

    out = []
    with ThreadPoolExecutor(instances) as pool:
        list(pool.map(one, range(instances)))  # warm every instance
        for _ in range(repeats):
            before = triton_stats.snapshot(url)
            list(pool.map(one, range(instances)))
            after = triton_stats.settled(url, before, {contract.BACKBONE_PRIMARY: instances})
            counts = {
                key: int(after[contract.BACKBONE_PRIMARY][key])
                - int(before[contract.BACKBONE_PRIMARY][key])
                for key in ("execution_count", "inference_count")
            }
            if counts["execution_count"] != counts["inference_count"]:
                continue  # the batcher merged two: not a round of batches of one
            total = model_ms(before, after, contract.BACKBONE_PRIMARY)
            out.append(total / counts["execution_count"])
    if not out:
        raise RuntimeError("Every round of concurrent engine calls was merged into one batch")
    return out


def measure(
    url: str,
    syntaxes: tuple[str, ...],
    *,
    requests: int = 30,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8),
    repeats: int = 5,
    seed: int = 0,
    pid: int | None = None,
) -> ServiceTimes:
    """Everything :class:`ServiceTimes` holds, measured on the server at ``url``.

    Args:
        url: gRPC ``host:port`` of a Triton server of this project's ensemble, otherwise idle.
        syntaxes: Transfer syntaxes to measure preprocessing for.
        requests: Requests per syntax.
        batch_sizes: Engine batch sizes to time.
        repeats: Executions per batch size.
        seed: Seed of the synthetic studies.
        pid: The server's main process, where known: each process's CPU time per request.
    """
    per_request = measure_requests(url, syntaxes, requests, seed, pid=pid)
    beside = measure_requests(url, syntaxes, requests, seed, beside_engine=True)
    batching = batching_of(url)
    return ServiceTimes(
        preprocess_ms=per_request["preprocess_ms"],
        fusion_ms=per_request["fusion_ms"],
        outside_ms=per_request["outside_ms"],
        engine_ms=measure_engine(url, batch_sizes, repeats),
        engine_contended_ms=measure_engine_contended(url, batching["instances"], repeats),
        client_cpu_ms=per_request["client_cpu_ms"],
        preprocess_beside_ms=beside["preprocess_ms"],
        outside_beside_ms=beside["outside_ms"],
        batching=batching,
        cpu_ms=per_request["cpu_ms"],
        engine_beside_ms=beside["engine_beside_ms"],
    )
