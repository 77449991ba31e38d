"""Service times pooled over several measurements, and what the capacity model takes from them."""

from __future__ import annotations

import pytest

from aln.benchmarks import service_times
from aln.benchmarks.capacity import Profile
from aln.preprocessing import contract


def _times(cpu_ms, engine_beside_ms=None, engine_contended_ms=(1.0,)):
    return service_times.ServiceTimes(
        preprocess_ms={"explicit": [1.0]},
        fusion_ms=[1.0],
        outside_ms={"explicit": [1.0]},
        engine_ms={"1": [100.0]},
        engine_contended_ms=list(engine_contended_ms),
        client_cpu_ms={"explicit": 1.0},
        preprocess_beside_ms=None,
        outside_beside_ms=None,
        batching={"instances": 1, "max_batch": 1, "delay_ms": 0.0},
        cpu_ms=cpu_ms,
        engine_beside_ms=engine_beside_ms,
    )


def test_pooled_service_times_average_each_processes_cpu_per_request():
    first = _times({"explicit": {"tritonserver": 10.0, "preprocess": 20.0}})
    second = _times({"explicit": {"tritonserver": 14.0, "preprocess": 30.0, "fusion_head": 2.0}})
    pooled = service_times.pool(first, second)
    # a process missing from one measurement spent nothing there
    assert pooled.cpu_ms == {
        "explicit": {"fusion_head": 1.0, "preprocess": 25.0, "tritonserver": 12.0}
    }
    assert service_times.pool(first, _times(None)).cpu_ms is None
    restored = service_times.ServiceTimes.from_json(pooled.to_json())
    assert restored.cpu_ms == pooled.cpu_ms
    older = pooled.to_json()
    del older["cpu_ms"]  # files measured before the split was
    assert service_times.ServiceTimes.from_json(older).cpu_ms is None


def test_pooled_service_times_join_the_busy_engines_times_where_every_part_has_them():
    pooled = service_times.pool(_times(None, [110.0]), _times(None, [130.0]))
    assert pooled.engine_beside_ms == [110.0, 130.0]
    assert service_times.pool(_times(None, [110.0]), _times(None)).engine_beside_ms is None


def test_the_engine_slows_under_load_by_the_larger_of_its_two_crowded_measurements():
    # alone 100 ms; beside another engine 105 ms; beside the studies' own work 120 ms
    crowded = _times(None, [120.0], engine_contended_ms=[105.0])
    assert Profile.measured(crowded).engine.contention == pytest.approx(1.2)
    older = _times(None, None, engine_contended_ms=[105.0])  # measured before the beside times
    assert Profile.measured(older).engine.contention == pytest.approx(1.05)
    faster = _times(None, [90.0], engine_contended_ms=[95.0])  # never below alone
    assert Profile.measured(faster).engine.contention == 1.0


def _snapshot(executions, infer_ms):
    stats = {phase: {"ns": 0} for phase in service_times.STEP_PHASES}
    stats["compute_infer"] = {"ns": int(infer_ms * 1e6)}
    return {contract.BACKBONE_AUXILIARY: {"execution_count": executions, "inference_stats": stats}}


def test_the_busy_engines_time_per_batch_leaves_out_the_studies_own_executions():
    # 21 executions over the window: 4 are the studies' skipped all-zero rows, 17 the busy engine's
    before, after = _snapshot(10, 1000.0), _snapshot(31, 1000.0 + 17 * 200.0)
    assert service_times.busy_engine_ms(before, after, studies=4) == pytest.approx(200.0)
    with pytest.raises(RuntimeError, match="no batch of its own"):
        service_times.busy_engine_ms(before, _snapshot(14, 1100.0), studies=4)
