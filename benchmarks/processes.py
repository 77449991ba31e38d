"""Resident memory and CPU time of a server and its child processes, read from ``/proc``.

Triton runs each Python-backend model instance in its own stub process (a child of
``tritonserver`` whose command line ends with the instance name), so per-process CPU time tells
where a served study's CPU goes: the Triton core, each preprocess instance, each engine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
TICK_S = 1 / _TICKS
"""Resolution of the server's per-process CPU times: ``/proc`` counts them in clock ticks, so a
process's CPU between two readings may be short or long by up to one tick (10 ms at the usual
100 Hz). Over ``n`` items that is ``TICK_S / n`` per item per process; the load generator's own
time (:func:`own_cpu_seconds`) is exact."""
CALLER = "load generator (client)"
"""The key of the load generator's own CPU time in :class:`CpuMeter`'s split."""


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants still alive."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found.append(current)
        pending += [int(c) for c in children]
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def server_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (the Python-backend stubs), MB."""
    return round(sum(_rss_kb(current) for current in process_tree(pid)) / 1024, 1)


def rss_mb_by_component(pid: int) -> dict[str, float]:
    """Resident memory of ``pid``'s tree in MB, summed per :func:`component`."""
    totals: dict[str, float] = {}
    for current in process_tree(pid):
        name = component(current)
        totals[name] = totals.get(name, 0.0) + _rss_kb(current) / 1024
    return totals


def component(pid: int) -> str:
    """``tritonserver``, a Python-backend model name (``preprocess``, ...) or the program name."""
    from aln.serving.supervisor import proc_cmdline, stub_of

    stub = stub_of(pid)
    if stub is not None:
        return stub.model
    argv = proc_cmdline(pid)
    if argv is None:
        return "gone"
    return Path(argv[0]).name or "unknown"


def cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU seconds of ``pid``'s tree, summed per :func:`component`."""
    from aln.serving.supervisor import proc_stat

    totals: dict[str, float] = {}
    for current in process_tree(pid):
        fields = proc_stat(current)
        if fields is None:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        name = component(current)
        totals[name] = totals.get(name, 0.0) + seconds
    return totals


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (the load generator), to the nanosecond."""
    return time.process_time()


def machine_cpu_seconds() -> dict[str, float]:
    """Seconds of every core together since boot (``/proc/stat``): ``busy``, ``idle``, ``steal``.

    ``steal`` is time the hypervisor gave this machine's virtual cores to others; ``idle``
    includes waiting on I/O.
    """
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return {
        "busy": (user + nice + system + irq + softirq) / _TICKS,
        "idle": (idle + iowait) / _TICKS,
        "steal": steal / _TICKS,
    }


@dataclass(frozen=True)
class CpuSplit:
    """Where the CPU went over a window (:class:`CpuMeter`).

    Attributes:
        core_ms_per_item: Core-ms per item (a completed study) per component, the caller
            (:data:`CALLER`) included.
        machine: The machine's ``busy``, ``idle`` and ``steal`` time as shares of all cores' time.
    """

    core_ms_per_item: dict[str, float]
    machine: dict[str, float]

    @property
    def total_ms(self) -> float:
        """Core-ms per item, every process together."""
        return round(sum(self.core_ms_per_item.values()), 1)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, the total included."""
        return {
            "core_ms_per_item": self.core_ms_per_item,
            "core_ms_per_item_total": self.total_ms,
            "machine": self.machine,
        }


class CpuMeter:
    """Where the CPU went between :meth:`start` and :meth:`split`: per process, and the machine's.

    Reads the CPU time of a server's tree per :func:`component` and of this process (the load
    generator, :data:`CALLER`), and the machine's busy, idle and steal time, at both ends.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._processes: dict[str, float] = {}
        self._machine: dict[str, float] = {}

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        return {CALLER: own_cpu_seconds(), **cpu_seconds(self.pid)}, machine_cpu_seconds()

    def start(self) -> CpuMeter:
        """Take the starting readings (again, if called again); returns the meter."""
        self._processes, self._machine = self._read()
        return self

    def split(self, items: int) -> CpuSplit:
        """The split since :meth:`start`, divided by ``items`` (at least 1 used)."""
        if not self._machine:
            raise RuntimeError("CpuMeter.split() called before start()")
        processes, machine = self._read()
        count = max(items, 1)
        per_item = {
            name: round((seconds - self._processes.get(name, 0.0)) / count * 1000, 1)
            for name, seconds in sorted(processes.items())
        }
        spent = {key: machine[key] - self._machine[key] for key in machine}
        total = sum(spent.values()) or 1.0
        return CpuSplit(per_item, {key: round(value / total, 4) for key, value in spent.items()})
