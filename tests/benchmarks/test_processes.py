"""Where the CPU went: the meter's split per process and the machine's shares."""

from __future__ import annotations

import os
import time

import pytest

from aln.benchmarks import processes


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_meter_divides_the_callers_cpu_time_by_the_items_and_shares_the_machine():
    meter = processes.CpuMeter(os.getpid()).start()
    _burn(0.3)
    split = meter.split(3)
    # 300 ms of this process's CPU over 3 items: about 100 ms each (the caller's key)
    assert 95 <= split.core_ms_per_item[processes.CALLER] <= 130
    assert split.total_ms >= split.core_ms_per_item[processes.CALLER]
    assert set(split.machine) == {"busy", "idle", "steal"}
    assert sum(split.machine.values()) == pytest.approx(1.0, abs=0.01)
    assert split.machine["busy"] > 0
    assert split.to_json()["core_ms_per_item_total"] == split.total_ms


def test_cpu_meter_refuses_a_split_before_it_started():
    with pytest.raises(RuntimeError, match="before start"):
        processes.CpuMeter(os.getpid()).split(1)
