"""A discrete-event model of one served replica (SimPy), built from measured service times.

One replica (:class:`Node`) as Triton runs this project's ensemble:

- **cores**, shared by processor sharing: every piece of CPU work runs in slices of
  ``quantum_ms`` on whichever core is free, so ``k`` runnable pieces on ``c < k`` cores each
  progress at ``c / k``. An engine on the cores also runs slower while every core is busy (its
  measured :attr:`Engine.contention`: caches and memory bandwidth are shared).
- **preprocess instances**: a study waits for a free instance, then its decoding and cropping (a
  sample of its transfer syntax's measured times) runs on the cores. Where the times were also
  measured beside a busy engine, a study whose work begins while every other core is busy draws
  from those instead (:meth:`Profile.draw`): on shared caches, memory bandwidth and a crowded
  scheduler its own work takes longer than alone, beyond its fair share of the cores.
- **engines**: the primary (and, for studies with an auxiliary image, the auxiliary) backbone
  behind Triton's dynamic batcher: ``engine_instances`` executors, each taking the waiting
  requests up to ``max_batch`` once the oldest has waited ``batch_delay_ms`` (at once when the
  batch is full). A batch of ``n`` takes a sample of the engine's time for ``n``; it runs on the
  cores (``gpus == 0``, as on this machine) or holds one of the GPUs.
- **outside the models**: the caller's encoding, gRPC and copies (measured as the caller's latency
  minus the steps' times). When the caller runs on the replica's machine (``caller_on_node``, as in
  the measured sweep) all of it is work on the cores, and the caller's own share
  (``client_cpu_ms``) also passes through its single event-loop thread; otherwise only the
  server's share (the rest) is. Drawn alone or beside a busy engine as preprocessing is.
- the **fusion head**: its measured time as work on the cores.

Not modelled: the network between caller and replica beyond the loopback the times were measured
on, and the load balancer (replicas are taken to share arrivals evenly).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from aln.benchmarks.service_times import ServiceTimes


@dataclass(frozen=True)
class Engine:
    """Engine time per batch: measured samples per batch size, a fitted line where unmeasured.

    Attributes:
        samples_ms: Execution times per batch size, alone.
        on_gpu: Whether the engine holds a GPU (else it is work on the cores).
        contention: An execution's time while every core is busy over its time alone: the larger
            of the two measured, every instance executing at once, and one executing beside the
            studies' own work; applies to an engine on the cores.
    """

    samples_ms: dict[int, tuple[float, ...]]
    on_gpu: bool = False
    contention: float = 1.0

    def __post_init__(self) -> None:
        if not self.samples_ms or any(not v for v in self.samples_ms.values()):
            raise ValueError("An engine needs at least one time for at least one batch size")
        if min(self.samples_ms) < 1:
            raise ValueError(f"Batch sizes start at 1, got {min(self.samples_ms)}")
        if self.contention < 1:
            raise ValueError(f"Engine.contention cannot be below 1, got {self.contention}")

    @classmethod
    def linear(cls, fixed_ms: float, per_image_ms: float, on_gpu: bool = True) -> Engine:
        """A deterministic engine: ``fixed_ms + per_image_ms * n`` per batch of ``n``."""
        if fixed_ms < 0 or per_image_ms <= 0:
            raise ValueError(
                f"Engine times must be positive, got fixed_ms={fixed_ms}, "
                f"per_image_ms={per_image_ms}"
            )
        return cls({1: (fixed_ms + per_image_ms,), 2: (fixed_ms + 2 * per_image_ms,)}, on_gpu)

    def line(self) -> tuple[float, float]:
        """``(fixed_ms, per_image_ms)``: least squares through the mean time of each batch size."""
        sizes = np.array(sorted(self.samples_ms), dtype=float)
        means = np.array([np.mean(self.samples_ms[int(n)]) for n in sizes])
        if len(sizes) == 1:
            return 0.0, float(means[0] / sizes[0])
        per_image, fixed = np.polyfit(sizes, means, 1)
        return max(float(fixed), 0.0), float(per_image)

    def draw(self, n: int, rng: random.Random) -> float:
        """One execution time for a batch of ``n``.

        A measured sample, or the line times the relative spread measured at the nearest size.
        """
        if n in self.samples_ms:
            return rng.choice(self.samples_ms[n])
        fixed, per_image = self.line()
        nearest = min(self.samples_ms, key=lambda size: abs(size - n))
        spread = self.samples_ms[nearest]
        return (fixed + per_image * n) * rng.choice(spread) / float(np.mean(spread))


@dataclass(frozen=True)
class Profile:
    """Service-time distributions of one served repository on one machine's cores (ms).

    Attributes:
        preprocess_ms: Per transfer syntax, decoding and cropping times.
        fusion_ms: Fusion-head times.
        outside_ms: Per transfer syntax, times outside the models (caller, gRPC, copies).
        client_cpu_ms: Per transfer syntax, the caller's share of ``outside_ms`` (mean).
        engine: The backbones' engine.
        preprocess_beside_ms: ``preprocess_ms`` measured beside a busy engine (None: as alone).
        outside_beside_ms: ``outside_ms`` measured beside a busy engine (None: as alone).
    """

    preprocess_ms: dict[str, tuple[float, ...]]
    fusion_ms: tuple[float, ...]
    outside_ms: dict[str, tuple[float, ...]]
    client_cpu_ms: dict[str, float]
    engine: Engine
    preprocess_beside_ms: dict[str, tuple[float, ...]] | None = None
    outside_beside_ms: dict[str, tuple[float, ...]] | None = None

    def draw(self, stage: str, syntax: str, beside: bool, rng: random.Random) -> float:
        """One time of ``stage`` (``"preprocess"`` or ``"outside"``) for a study of ``syntax``.

        From the times measured beside a busy engine when ``beside`` and they were measured.
        """
        alone: dict[str, tuple[float, ...]] = getattr(self, f"{stage}_ms")
        busy: dict[str, tuple[float, ...]] | None = getattr(self, f"{stage}_beside_ms")
        return rng.choice((busy if beside and busy else alone)[syntax])

    @classmethod
    def measured(cls, times: ServiceTimes, engine: Engine | None = None) -> Profile:
        """The profile of measured :class:`ServiceTimes`.

        With their engine unless another is given (a GPU's, for planning).
        """
        alone = float(np.mean(times.engine_ms["1"]))
        # the engine's neighbours under load: another engine, or a study's own work
        crowded = [float(np.mean(times.engine_contended_ms))]
        if times.engine_beside_ms:
            crowded.append(float(np.mean(times.engine_beside_ms)))
        measured_engine = Engine(
            {int(n): tuple(v) for n, v in times.engine_ms.items()},
            on_gpu=False,
            contention=max(max(crowded) / alone, 1.0),
        )
        return cls(
            _tuples(times.preprocess_ms),
            tuple(times.fusion_ms),
            _tuples(times.outside_ms),
            dict(times.client_cpu_ms),
            engine or measured_engine,
            _tuples(times.preprocess_beside_ms),
            _tuples(times.outside_beside_ms),
        )


def _tuples(samples: dict[str, list[float]] | None) -> Any:
    """Measured samples per syntax as the profile holds them (None stays None)."""
    return None if samples is None else {k: tuple(v) for k, v in samples.items()}


@dataclass(frozen=True)
class Node:
    """One replica's resources and Triton settings.

    Attributes:
        cores: CPU cores (of the speed the profile was measured on).
        preprocess_instances: ``preprocess`` model instances.
        engine_instances: Instances of each backbone (in all; spread over the GPUs).
        max_batch: Largest batch the dynamic batcher forms.
        batch_delay_ms: The batcher's ``max_queue_delay``.
        gpus: GPUs (0: the engines run on the cores).
        caller_on_node: The load generator shares the cores (a sweep on one machine).
        connections: gRPC connections the callers hold: the transfer work of every request on
            one connection shares its thread (HTTP/2 interleaves the streams).
        quantum_ms: Processor-sharing slice.
    """

    cores: int
    preprocess_instances: int
    engine_instances: int
    max_batch: int
    batch_delay_ms: float
    gpus: int = 0
    caller_on_node: bool = False
    connections: int = 1
    quantum_ms: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "cores",
            "preprocess_instances",
            "engine_instances",
            "max_batch",
            "connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Node.{name} must be at least 1, got {getattr(self, name)}")
        if self.gpus < 0 or self.batch_delay_ms < 0 or self.quantum_ms <= 0:
            raise ValueError("Node.gpus and batch_delay_ms cannot be negative, quantum_ms > 0")


@dataclass
class Outcome:
    """What a simulated window produced.

    Attributes:
        window_s: Simulated seconds measured (after warm-up).
        latencies_ms: Every study completed in the window.
        waiting_ms: How long each study started in the window and unfinished at its end had
            waited (part of the tail: an overloaded replica shows a long one, not a short one).
        arrived: Studies started in the window.
        cpu_busy: Share of core time in use.
        gpu_busy: Share of GPU time in use (None without GPUs).
        connection_busy: Share of the connections' threads' time in use.
        mean_batch: Mean primary-engine batch.
    """

    window_s: float
    latencies_ms: list[float] = field(default_factory=list)
    waiting_ms: list[float] = field(default_factory=list)
    arrived: int = 0
    cpu_busy: float = 0.0
    gpu_busy: float | None = None
    connection_busy: float = 0.0
    mean_batch: float = 0.0

    @property
    def throughput_per_s(self) -> float:
        """Completed studies per simulated second."""
        return len(self.latencies_ms) / self.window_s

    def percentile(self, q: float) -> float:
        """Latency percentile in ms over completed and still-waiting studies (NaN if none)."""
        values = self.latencies_ms + self.waiting_ms
        return float(np.percentile(values, q)) if values else math.nan

    @property
    def bottleneck(self) -> str:
        """The busiest of the cores, the GPUs and the connections' threads."""
        busy = {"cpu": self.cpu_busy, "gpu": self.gpu_busy or 0.0}
        busy["connection"] = self.connection_busy
        return max(busy, key=lambda name: busy[name])

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "throughput_per_s": round(self.throughput_per_s, 3),
            "p50_ms": round(self.percentile(50), 1),
            "p99_ms": round(self.percentile(99), 1),
            "completed": len(self.latencies_ms),
            "arrived": self.arrived,
            "cpu_busy": round(self.cpu_busy, 3),
            "gpu_busy": None if self.gpu_busy is None else round(self.gpu_busy, 3),
            "connection_busy": round(self.connection_busy, 3),
            "mean_batch": round(self.mean_batch, 2),
            "bottleneck": self.bottleneck,
        }


@dataclass(frozen=True)
class Study:
    """What the model needs to know of a request."""

    syntax: str
    auxiliary: bool = False


class _Replica:
    """The SimPy processes of one :class:`Node` serving a :class:`Profile`."""

    def __init__(self, env: simpy.Environment, node: Node, profile: Profile, seed: int) -> None:
        self.env, self.node, self.profile = env, node, profile
        self.rng = random.Random(seed)
        self.cores = simpy.Resource(env, node.cores)
        self.connections = simpy.Resource(env, node.connections)
        self.preprocess = simpy.Resource(env, node.preprocess_instances)
        self.gpus = [simpy.Resource(env, 1) for _ in range(node.gpus)]
        self.core_ms = 0.0
        self.gpu_ms = 0.0
        self.connection_ms = 0.0
        self.batches: list[int] = []
        queues = {"primary": simpy.Store(env), "auxiliary": simpy.Store(env)}
        self.queues = queues
        for name, queue in queues.items():
            env.process(self._batcher(queue, record=name == "primary"))

    def others_busy(self) -> bool:
        """Whether every core but one is at work (the one core of a single-core node)."""
        return self.cores.count >= max(self.node.cores - 1, 1)

    def work(
        self, ms: float, thread: simpy.Resource | None = None, contention: float = 1.0
    ) -> Generator[Any, Any, None]:
        """``ms`` of one core's work, processor-shared with everything else on the cores.

        With a ``thread``, each slice also waits its turn on it (work that shares one thread);
        a slice that starts while every core is busy takes ``contention`` times as long.
        """
        remaining = ms
        node = self.node
        while remaining > 1e-9:
            with contextlib.ExitStack() as held:
                if thread is not None:
                    turn = held.enter_context(thread.request())
                    yield turn
                core = held.enter_context(self.cores.request())
                yield core
                slowdown = contention if self.cores.count == node.cores else 1.0
                piece = min(node.quantum_ms, remaining)
                yield self.env.timeout(piece * slowdown)
                self.core_ms += piece * slowdown
                if thread is not None:
                    self.connection_ms += piece * slowdown
                remaining -= piece

    def _batcher(self, queue: simpy.Store, record: bool) -> Generator[Any, Any, None]:
        """One model's dynamic batcher, as Triton's: one queue, batches handed to free instances.

        A batch opens with the oldest waiting study and takes every study that arrives until the
        delay from the oldest has passed or the batch is full (a second study arriving within the
        delay joins the first, even with an instance idle: measured with Triton's trace, pairs
        formed exactly from studies that arrived within the delay). While every instance is
        busy the batch keeps growing until one frees.
        """
        node, env = self.node, self.env
        free = simpy.Store(env)
        for instance in range(node.engine_instances):
            free.put(instance)
        while True:
            batch = [(yield queue.get())]
            closes = batch[0][1] + node.batch_delay_ms
            while len(batch) < node.max_batch:
                if queue.items:
                    batch.append((yield queue.get()))
                    continue
                if env.now >= closes:
                    break
                arrival = queue.get()
                outcome = yield arrival | env.timeout(closes - env.now)
                if arrival in outcome:
                    batch.append(outcome[arrival])
                else:
                    arrival.cancel()
            instance = yield free.get()
            while queue.items and len(batch) < node.max_batch:
                batch.append((yield queue.get()))
            if record:
                self.batches.append(len(batch))
            env.process(self._execute(batch, instance, free))

    def _execute(
        self, batch: list[tuple[simpy.Event, float]], instance: int, free: simpy.Store
    ) -> Generator[Any, Any, None]:
        """Run one batch on ``instance`` (on the cores, or on the GPU it sits on)."""
        env = self.env
        ms = self.profile.engine.draw(len(batch), self.rng)
        if not self.gpus:
            yield from self.work(ms, contention=self.profile.engine.contention)
        else:
            with self.gpus[instance % len(self.gpus)].request() as held:
                yield held
                yield env.timeout(ms)
                self.gpu_ms += ms
        yield free.put(instance)
        for done, _ in batch:
            done.succeed()

    def serve(self, study: Study) -> Generator[Any, Any, None]:
        """One study from the caller's send to its answer."""
        profile, rng, env = self.profile, self.rng, self.env
        outside = profile.draw("outside", study.syntax, self.others_busy(), rng)
        if not self.node.caller_on_node:
            outside -= min(profile.client_cpu_ms[study.syntax], outside)
        yield from self.work(outside, self.connections)
        with self.preprocess.request() as instance:
            yield instance
            pre = profile.draw("preprocess", study.syntax, self.others_busy(), rng)
            yield from self.work(pre)
        waits = []
        for name in ("primary", "auxiliary") if study.auxiliary else ("primary",):
            done = env.event()
            yield self.queues[name].put((done, env.now))
            waits.append(done)
        yield env.all_of(waits)
        yield from self.work(rng.choice(profile.fusion_ms))


def closed_loop(
    node: Node,
    profile: Profile,
    concurrency: int,
    mix: Sequence[Study],
    *,
    window_s: float = 120.0,
    warmup_s: float = 10.0,
    seed: int = 0,
) -> Outcome:
    """``concurrency`` callers sending back to back, the studies of ``mix`` in turn (a sweep)."""
    env = simpy.Environment()
    replica = _Replica(env, node, profile, seed)
    warm_ms, end_ms = warmup_s * 1000, (warmup_s + window_s) * 1000
    outcome = Outcome(window_s)
    counter = iter(range(1 << 62))

    def caller() -> Generator[Any, Any, None]:
        while env.now < end_ms:
            study = mix[next(counter) % len(mix)]
            start = env.now
            yield from replica.serve(study)
            if start >= warm_ms:
                outcome.arrived += 1
                if env.now <= end_ms:
                    outcome.latencies_ms.append(env.now - start)

    for _ in range(concurrency):
        env.process(caller())
    env.run(until=end_ms)
    _account(outcome, replica)
    return outcome


def open_loop(
    node: Node,
    profile: Profile,
    rate_per_s: float,
    mix: Sequence[tuple[Study, float]],
    *,
    window_s: float = 300.0,
    warmup_s: float = 30.0,
    seed: int = 0,
) -> Outcome:
    """Poisson arrivals at ``rate_per_s``; each study drawn from ``mix`` (study, weight).

    Studies still in flight when the window ends count as arrived, not completed, and their wait
    so far joins the tail (:attr:`Outcome.waiting_ms`).
    """
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    env = simpy.Environment()
    replica = _Replica(env, node, profile, seed)
    rng = random.Random(seed + 1)
    studies, weights = zip(*mix, strict=True)
    warm_ms, end_ms = warmup_s * 1000, (warmup_s + window_s) * 1000
    outcome = Outcome(window_s)
    unfinished: dict[int, float] = {}

    def one(key: int, study: Study) -> Generator[Any, Any, None]:
        start = env.now
        unfinished[key] = start
        yield from replica.serve(study)
        del unfinished[key]
        if start >= warm_ms:
            outcome.latencies_ms.append(env.now - start)

    def arrivals() -> Generator[Any, Any, None]:
        key = 0
        while True:
            yield env.timeout(rng.expovariate(rate_per_s / 1000))
            if env.now >= end_ms:
                return
            if env.now >= warm_ms:
                outcome.arrived += 1
            env.process(one(key, rng.choices(studies, weights)[0]))
            key += 1

    env.process(arrivals())
    env.run(until=end_ms)
    outcome.waiting_ms = [end_ms - s for s in unfinished.values() if s >= warm_ms]
    _account(outcome, replica)
    return outcome


def _account(outcome: Outcome, replica: _Replica) -> None:
    node, elapsed = replica.node, replica.env.now
    outcome.cpu_busy = replica.core_ms / (node.cores * elapsed)
    outcome.gpu_busy = replica.gpu_ms / (node.gpus * elapsed) if node.gpus else None
    outcome.connection_busy = replica.connection_ms / (node.connections * elapsed)
    outcome.mean_batch = float(np.mean(replica.batches)) if replica.batches else 0.0
