"""The SDK's shared-memory bookkeeping, without a server (regions are real POSIX segments)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from aln.client.shared_memory import GRANULE, PREFIX, RegionPool, process_start, stale_regions


def test_requests_in_flight_never_share_a_region_and_returned_ones_are_reused():
    pool = RegionPool()
    first, new_first = pool.take(1000)
    second, new_second = pool.take(1000)
    assert new_first and new_second and first.name != second.name
    assert pool.give_back(first) == []
    again, new = pool.take(500)
    assert again is first and not new
    for region in pool.drain():
        pool.forget(region)


def test_regions_are_sized_to_the_largest_study_and_outgrown_ones_retire():
    pool = RegionPool()
    small, _ = pool.take(10)
    assert small.size == GRANULE
    spare, _ = pool.take(10)
    assert pool.give_back(spare) == []  # free, still large enough
    large, new = pool.take(3 * GRANULE + 1)
    assert new and large.size == 4 * GRANULE
    # the next return retires every region smaller than the largest study seen
    assert {r.name for r in pool.give_back(small)} == {small.name, spare.name}
    assert pool.give_back(large) == []
    next_one, new = pool.take(10)
    assert next_one is large and not new
    for region in pool.drain():
        pool.forget(region)
    assert pool.drain() == []


def test_inputs_are_written_on_aligned_offsets():
    pool = RegionPool()
    region, _ = pool.take(300)
    placements = region.write({"a": np.arange(100, dtype=np.uint8), "b": np.ones(5, np.uint8)})
    assert (placements["a"].offset, placements["a"].size) == (0, 100)
    assert (placements["b"].offset, placements["b"].size) == (128, 5)
    pool.forget(region)
    assert not os.path.exists(f"/dev/shm/{region.name}")


def test_only_this_sdks_regions_of_dead_processes_on_this_host_are_stale():
    pool = RegionPool()
    live, _ = pool.take(10)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead_pid = int(gone.stdout)
    host = live.name.split("_")[1]
    dead = f"{PREFIX}_{host}_{dead_pid}_123_abcd_0"
    reused = f"{PREFIX}_{host}_{os.getpid()}_1_abcd_0"  # this pid, another start time
    other_host = f"{PREFIX}_ffffffff_{dead_pid}_123_abcd_0"
    names = [live.name, dead, reused, other_host, "someone_elses_region"]
    assert process_start(os.getpid()) == live.name.split("_")[3]
    assert stale_regions(names) == [dead, reused]
    pool.forget(live)
