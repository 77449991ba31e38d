"""The capacity model against what queueing theory says it must do: a lone study's time is the sum
of its stages, cores are shared, the batcher batches within its bounds, and an M/M/1 queue's
mean time in system comes out as 1 / (mu - lambda)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from aln.benchmarks import capacity
from aln.benchmarks.capacity import Engine, Node, Profile, Study


def _profile(engine: Engine, outside=10.0, pre=20.0, fusion=5.0) -> Profile:
    return Profile(
        preprocess_ms={"explicit": (pre,)},
        fusion_ms=(fusion,),
        outside_ms={"explicit": (outside,)},
        client_cpu_ms={"explicit": 0.0},
        engine=engine,
    )


def _node(**fields) -> Node:
    base = dict(
        cores=1, preprocess_instances=1, engine_instances=1, max_batch=1, batch_delay_ms=2.0
    )
    return Node(**{**base, **fields})


MIX = [Study("explicit")]


def test_a_lone_study_takes_the_sum_of_its_stages_and_the_batching_delay():
    engine = Engine({1: (100.0,)})
    node = _node(max_batch=4)  # a lone request waits the delay for company
    outcome = capacity.closed_loop(node, _profile(engine), 1, MIX, window_s=20, warmup_s=1)
    # outside 10 + preprocess 20 + batching delay 2 + engine 100 + fusion 5
    assert outcome.percentile(50) == pytest.approx(137.0)
    assert outcome.percentile(99) == pytest.approx(137.0)
    assert outcome.throughput_per_s == pytest.approx(1000 / 137, rel=0.01)
    assert outcome.cpu_busy == pytest.approx(135 / 137, rel=0.01)


def test_callers_share_the_cores_and_a_second_core_doubles_throughput():
    engine = Engine({1: (100.0,)})
    profile = _profile(engine)
    one = capacity.closed_loop(_node(), profile, 2, MIX, window_s=30, warmup_s=2)
    two = capacity.closed_loop(
        _node(cores=2, preprocess_instances=2, engine_instances=2), profile, 2, MIX,
        window_s=30, warmup_s=2,
    )  # fmt: skip
    assert one.cpu_busy > 0.99  # saturated: one core's work of 135 ms per study
    assert one.throughput_per_s == pytest.approx(1000 / 135, rel=0.02)
    assert two.throughput_per_s == pytest.approx(2 * 1000 / 137, rel=0.02)


def test_an_engine_on_busy_cores_runs_at_its_measured_contention():
    alone = Engine({1: (100.0,)})
    contended = Engine({1: (100.0,)}, contention=1.25)
    node = _node(cores=2, preprocess_instances=2, engine_instances=2)
    lone = capacity.closed_loop(node, _profile(contended), 1, MIX, window_s=20, warmup_s=1)
    assert lone.percentile(50) == pytest.approx(135.0)  # one study never fills both cores
    busy = capacity.closed_loop(node, _profile(contended), 8, MIX, window_s=30, warmup_s=2)
    free = capacity.closed_loop(node, _profile(alone), 8, MIX, window_s=30, warmup_s=2)
    # saturated: 35 ms of other work plus 125 ms of engine per study on two cores
    assert busy.throughput_per_s == pytest.approx(2000 / 160, rel=0.02)
    assert free.throughput_per_s == pytest.approx(2000 / 135, rel=0.02)


def test_a_study_beside_a_busy_core_takes_its_times_measured_beside_an_engine():
    """Outside and preprocessing times come from the beside-an-engine samples exactly when the
    study's step begins with every other core at work."""
    import simpy

    profile = dataclasses.replace(
        _profile(Engine({1: (100.0,)})),
        outside_beside_ms={"explicit": (50.0,)},
        preprocess_beside_ms={"explicit": (30.0,)},
    )
    node = _node(cores=2, preprocess_instances=2, engine_instances=2)
    for neighbour_ms, expected in ((0.0, 10 + 20 + 100 + 5), (1000.0, 50 + 30 + 100 + 5)):
        env = simpy.Environment()
        replica = capacity._Replica(env, node, profile, 0)
        if neighbour_ms:
            env.process(replica.work(neighbour_ms))  # the other core, busy all along
        done: list[float] = []

        def study(env=env, replica=replica, done=done):
            yield env.timeout(1.0)
            yield from replica.serve(MIX[0])
            done.append(env.now - 1.0)

        env.process(study())
        env.run(until=2000)
        assert done == [pytest.approx(expected)], neighbour_ms


def test_the_batcher_forms_batches_up_to_its_bound_and_they_cost_the_engine_line():
    engine = Engine.linear(fixed_ms=20.0, per_image_ms=2.0)  # a GPU: batches pay
    node = _node(cores=8, preprocess_instances=8, gpus=1, max_batch=4)
    profile = _profile(engine, outside=1.0, pre=1.0, fusion=1.0)
    outcome = capacity.closed_loop(node, profile, 16, MIX, window_s=20, warmup_s=2)
    assert outcome.mean_batch == pytest.approx(4.0, abs=0.05)  # 16 callers, batches of 4 at most
    # one GPU, one batch of 4 per 28 ms, the cores nearly idle: the GPU is the bottleneck
    assert outcome.throughput_per_s == pytest.approx(4 * 1000 / 28, rel=0.03)
    assert outcome.bottleneck == "gpu" and outcome.gpu_busy > 0.98


def test_a_study_arriving_within_the_delay_joins_the_first_though_an_instance_is_idle():
    """Triton's one batcher per model (seen in its trace): the second study of a pair 1 ms later
    joins the first; one arriving after the delay goes alone to the idle instance."""
    import simpy

    def arrive(env: simpy.Environment, replica: capacity._Replica, delay: float) -> object:
        yield env.timeout(delay)
        yield replica.queues["primary"].put((env.event(), env.now))

    node = _node(cores=2, engine_instances=2, max_batch=4)
    for gap_ms, batches in ((1.0, [2]), (5.0, [1, 1])):
        env = simpy.Environment()
        replica = capacity._Replica(env, node, _profile(Engine({1: (100.0,), 2: (200.0,)})), 0)
        env.process(arrive(env, replica, 0.0))
        env.process(arrive(env, replica, gap_ms))
        env.run(until=1000)
        assert replica.batches == batches, gap_ms


def test_an_open_mm1_queue_has_the_textbook_mean_time_in_system():
    rng = random.Random(3)
    service = tuple(rng.expovariate(1 / 50.0) for _ in range(20000))  # mean 50 ms: mu = 20/s
    engine = Engine({1: service}, on_gpu=True)
    node = _node(cores=4, preprocess_instances=4, gpus=1, batch_delay_ms=0.0)
    profile = _profile(engine, outside=0.0, pre=0.0, fusion=0.0)
    outcome = capacity.open_loop(
        node, profile, 14.0, [(MIX[0], 1.0)], window_s=3000, warmup_s=100, seed=1
    )
    mean = sum(outcome.latencies_ms) / len(outcome.latencies_ms)
    assert mean == pytest.approx(1000 / (20 - 14), rel=0.08)  # 166.7 ms
    assert outcome.gpu_busy == pytest.approx(14 / 20, rel=0.05)


def test_an_overloaded_replica_shows_its_waiting_studies_in_the_tail():
    engine = Engine({1: (100.0,)}, on_gpu=True)
    node = _node(cores=2, preprocess_instances=2, gpus=1, batch_delay_ms=0.0)
    outcome = capacity.open_loop(
        node, _profile(engine, 0.0, 0.0, 0.0), 20.0, [(MIX[0], 1.0)], window_s=30, warmup_s=1
    )
    assert outcome.throughput_per_s == pytest.approx(10.0, rel=0.05)  # one 100 ms batch at a time
    assert len(outcome.waiting_ms) > 200  # half of what arrived is still waiting
    assert outcome.percentile(99) > 10_000


def test_an_engine_interpolates_unmeasured_batches_on_its_line():
    engine = Engine({1: (12.0,), 2: (14.0,), 4: (18.0,)})
    assert engine.line() == pytest.approx((10.0, 2.0))
    assert engine.draw(8, random.Random(0)) == pytest.approx(26.0 * 18.0 / 18.0)
    assert engine.draw(2, random.Random(0)) == 14.0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"cores": 0}, "Node.cores"),
        ({"connections": 0}, "Node.connections"),
    ],
)
def test_an_impossible_node_is_refused_naming_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        _node(**fields)


def test_an_engine_faster_under_contention_than_alone_is_refused():
    with pytest.raises(ValueError, match="Engine.contention"):
        Engine({1: (10.0,)}, contention=0.9)
