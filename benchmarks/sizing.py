"""Sizing a deployment with the capacity model: replicas and GPUs for a network's peak hour.

A plan file (JSON, an example in ``examples/capacity-plan.json``) states the assumptions:

- ``mix``: share of studies per transfer syntax (syntaxes the service times were measured for),
  ``auxiliary_share``: share of studies sent with an auxiliary image;
- ``p99_budget_ms``: the latency the answer must arrive within for 99% of studies;
- ``scenarios``: each a name, ``studies_per_day``, ``working_hours`` (the hours most arrive in),
  ``share_in_hours`` (the share that arrives then) and ``peak_factor`` (the busiest hour over the
  working hours' mean);
- ``nodes``: replica types, each with ``cores``, ``gpus``, ``preprocess_instances``,
  ``engine_instances``, ``max_batch``, ``batch_delay_ms``, ``connections`` (the gRPC connections
  callers or the balancer hold to a replica: each one's receiving is one thread) and an
  ``engine``: ``"measured"`` (the engine of the service times, on the cores) or ``{"fixed_ms",
  "per_image_ms", "source"}`` (a GPU's time per batch, ``fixed + per_image * n``, with where the
  figures come from).

For each node type the model finds the highest arrival rate one replica sustains within the budget
(bisection on simulated open-loop runs), then each scenario's peak rate gives the replicas, and a
run at the resulting load per replica its p99, the cores' and GPUs' busy shares and the
bottleneck. Preprocessing runs on cores of the speed the service times were measured on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from aln.benchmarks import capacity
from aln.benchmarks.capacity import Engine, Node, Outcome, Profile, Study

SUSTAINED = 0.98
"""A load is sustained when at least this share of the studies started in the window finished."""
MIN_STUDIES = 2000
"""Every simulated run lasts long enough for this many arrivals (a p99 of seven studies is none)."""
BISECTION_STEPS = 8
"""Halvings of the search interval for the highest rate within budget (about 0.4% of the span)."""


class PlanError(ValueError):
    """A plan file that cannot be used, naming the field."""


@dataclass(frozen=True)
class Scenario:
    """One network's daily arrivals.

    Attributes:
        name: What it describes.
        studies_per_day: Studies sent in a day, all hospitals together.
        working_hours: The hours of the day most studies arrive in.
        share_in_hours: The share of the day's studies that arrive in them.
        peak_factor: The busiest hour's arrivals over the working hours' mean.
    """

    name: str
    studies_per_day: float
    working_hours: float
    share_in_hours: float
    peak_factor: float

    @property
    def peak_per_s(self) -> float:
        """Arrivals per second in the busiest hour."""
        per_hour = self.studies_per_day * self.share_in_hours / self.working_hours
        return per_hour * self.peak_factor / 3600


@dataclass(frozen=True)
class NodeType:
    """A replica type: its resources, Triton settings and engine."""

    name: str
    node: Node
    engine: Engine | None
    engine_source: str


@dataclass(frozen=True)
class Plan:
    """A parsed plan file."""

    mix: dict[str, float]
    auxiliary_share: float
    p99_budget_ms: float
    scenarios: list[Scenario]
    nodes: list[NodeType]

    def studies(self) -> list[tuple[Study, float]]:
        """``(study, weight)`` pairs: every syntax with and without an auxiliary image."""
        out = []
        for syntax, share in self.mix.items():
            for auxiliary, part in (
                (True, self.auxiliary_share),
                (False, 1 - self.auxiliary_share),
            ):
                if share * part > 0:
                    out.append((Study(syntax, auxiliary), share * part))
        return out


def _field(data: dict[str, Any], name: str, where: str, kind: type = float) -> Any:
    if name not in data:
        raise PlanError(f"{where}.{name} is missing")
    try:
        value = kind(data[name])
    except (TypeError, ValueError):
        raise PlanError(f"{where}.{name} must be a {kind.__name__}, got {data[name]!r}") from None
    if kind in (int, float) and value < 0:
        raise PlanError(f"{where}.{name} cannot be negative, got {value}")
    return value


def _engine(data: Any, where: str) -> tuple[Engine | None, str]:
    if data == "measured":
        return None, "measured with the service times"
    if not isinstance(data, dict):
        raise PlanError(f'{where}.engine must be "measured" or {{fixed_ms, per_image_ms, source}}')
    source = str(data.get("source") or "")
    if not source:
        raise PlanError(f"{where}.engine.source is missing: say where the engine times come from")
    try:
        engine = Engine.linear(
            _field(data, "fixed_ms", f"{where}.engine"),
            _field(data, "per_image_ms", f"{where}.engine"),
        )
    except ValueError as exc:
        raise PlanError(f"{where}.engine: {exc}") from None
    return engine, source


def parse_plan(data: dict[str, Any], syntaxes: set[str]) -> Plan:
    """Check a plan file's fields (``syntaxes``: those with measured service times).

    Raises:
        PlanError: A field missing, of the wrong kind or out of range, named as ``where.field``.
    """
    mix = data.get("mix")
    if not isinstance(mix, dict) or not mix:
        raise PlanError("mix must map transfer syntaxes to their shares")
    unknown = sorted(set(mix) - syntaxes)
    if unknown:
        raise PlanError(
            f"mix.{unknown[0]} has no measured service times; "
            f"measured: {', '.join(sorted(syntaxes))}"
        )
    shares = {k: _field(mix, k, "mix") for k in mix}
    if not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6):
        raise PlanError(f"mix shares must add up to 1, got {sum(shares.values()):.4f}")
    auxiliary = _field(data, "auxiliary_share", "plan")
    if auxiliary > 1:
        raise PlanError(f"plan.auxiliary_share must be at most 1, got {auxiliary}")
    scenarios = []
    for i, raw in enumerate(data.get("scenarios") or []):
        where = f"scenarios[{i}]"
        scenario = Scenario(
            str(raw.get("name") or where),
            _field(raw, "studies_per_day", where),
            _field(raw, "working_hours", where),
            _field(raw, "share_in_hours", where),
            _field(raw, "peak_factor", where),
        )
        if not 0 < scenario.working_hours <= 24 or not 0 < scenario.share_in_hours <= 1:
            raise PlanError(f"{where}: working_hours must be in (0, 24], share_in_hours in (0, 1]")
        if scenario.peak_factor < 1 or scenario.studies_per_day <= 0:
            raise PlanError(f"{where}: peak_factor must be at least 1, studies_per_day above 0")
        scenarios.append(scenario)
    nodes = []
    for i, raw in enumerate(data.get("nodes") or []):
        where = f"nodes[{i}]"
        engine, source = _engine(raw.get("engine"), where)
        try:
            node = Node(
                cores=_field(raw, "cores", where, int),
                gpus=_field(raw, "gpus", where, int),
                preprocess_instances=_field(raw, "preprocess_instances", where, int),
                engine_instances=_field(raw, "engine_instances", where, int),
                max_batch=_field(raw, "max_batch", where, int),
                batch_delay_ms=_field(raw, "batch_delay_ms", where),
                connections=_field(raw, "connections", where, int),
                quantum_ms=float(raw.get("quantum_ms", 10.0)),
            )
        except ValueError as exc:
            raise PlanError(f"{where}: {exc}") from None
        if (engine is None) != (node.gpus == 0):
            raise PlanError(
                f"{where}: a measured engine runs on the cores (gpus 0); a GPU needs "
                "its engine times"
            )
        nodes.append(NodeType(str(raw.get("name") or where), node, engine, source))
    if not scenarios or not nodes:
        raise PlanError("A plan needs at least one entry in scenarios and one in nodes")
    return Plan(shares, auxiliary, _field(data, "p99_budget_ms", "plan"), scenarios, nodes)


def demand(node: Node, profile: Profile, plan: Plan) -> dict[str, float]:
    """Mean work per study (core ms, GPU ms) and the rate each resource could carry at most."""
    server = sum(
        share * max(float(np.mean(profile.outside_ms[s])) - profile.client_cpu_ms[s], 0.0)
        for s, share in plan.mix.items()
    )
    pre = sum(share * float(np.mean(profile.preprocess_ms[s])) for s, share in plan.mix.items())
    images = 1 + plan.auxiliary_share
    fixed, per_image = profile.engine.line()
    engine = images * (fixed / node.max_batch + per_image)
    core_ms = server + pre + float(np.mean(profile.fusion_ms))
    gpu_ms = 0.0
    if node.gpus:
        gpu_ms = engine
    else:
        core_ms += engine * profile.engine.contention
    limits = {
        "connections": node.connections * 1000 / server if server > 0 else math.inf,
        "cores": node.cores * 1000 / core_ms,
        "preprocess_instances": node.preprocess_instances * 1000 / pre,
    }
    if node.gpus:
        limits["gpus"] = node.gpus * 1000 / gpu_ms
    out = {"core_ms": core_ms, "gpu_ms": gpu_ms}
    if node.gpus:
        # the cores (of the measured speed) that keep every GPU of the node busy
        out["cores_to_feed_gpus"] = limits["gpus"] * core_ms / 1000
    return {**out, **{f"max_per_s_{k}": v for k, v in limits.items()}}


def within_budget(outcome: Outcome, budget_ms: float) -> bool:
    """The run sustained its load and its p99 (waiting studies included) is within budget."""
    finished = len(outcome.latencies_ms) >= SUSTAINED * max(outcome.arrived, 1)
    return finished and outcome.percentile(99) <= budget_ms


def run(
    node: Node, profile: Profile, plan: Plan, rate_per_s: float, window_s: float, seed: int = 0
) -> Outcome:
    """One open-loop run at ``rate_per_s``, at least ``window_s`` long and :data:`MIN_STUDIES`."""
    window = max(window_s, MIN_STUDIES / rate_per_s)
    return capacity.open_loop(node, profile, rate_per_s, plan.studies(), window_s=window, seed=seed)


def best_rate(
    node: Node, profile: Profile, plan: Plan, window_s: float, seed: int = 0
) -> tuple[float, Outcome, list[dict[str, Any]]]:
    """The highest arrival rate one replica sustains within the budget.

    Returns:
        The rate, the run at it, and every run of the search (``rate_per_s``, ``p99_ms``,
        ``within``).
    """
    limits = demand(node, profile, plan)
    high = min(v for k, v in limits.items() if k.startswith("max_per_s_"))
    low, best, trace = 0.0, None, []
    for _ in range(BISECTION_STEPS):
        rate = (low + high) / 2
        outcome = run(node, profile, plan, rate, window_s, seed)
        ok = within_budget(outcome, plan.p99_budget_ms)
        trace.append(
            {"rate_per_s": round(rate, 4), "p99_ms": round(outcome.percentile(99), 1), "within": ok}
        )
        if ok:
            low, best = rate, outcome
        else:
            high = rate
    if best is None:
        raise PlanError(
            f"No load meets p99 {plan.p99_budget_ms} ms on this node: a single study takes longer"
        )
    return low, best, trace


def replicas_for(
    node: Node,
    profile: Profile,
    plan: Plan,
    peak_per_s: float,
    best_per_s: float,
    window_s: float,
    seed: int = 0,
) -> tuple[int, Outcome]:
    """Replicas for ``peak_per_s``, checked by a run at their share of it, and that run.

    Starts from the peak over the :func:`best_rate`; near saturation a run's p99 moves with its
    arrivals as much as with its rate, so where the check is over budget one more replica is
    added until it is within (at most twice the first count, else :class:`PlanError`).
    """
    first = max(1, math.ceil(peak_per_s / best_per_s))
    for replicas in range(first, 2 * first + 1):
        outcome = run(node, profile, plan, peak_per_s / replicas, window_s, seed)
        if within_budget(outcome, plan.p99_budget_ms):
            return replicas, outcome
    raise PlanError(
        f"{peak_per_s * 3600:.0f} studies/h stay over the p99 budget of {plan.p99_budget_ms} ms "
        f"even on {2 * first} replicas, twice what the best rate of one suggests"
    )
