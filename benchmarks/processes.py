"""Resident memory and CPU time of a server and its child processes, read from ``/proc``.

Triton runs each Python-backend model instance in its own stub process (a child of
``tritonserver`` whose command line ends with the instance name), so per-process CPU time tells
where a served study's CPU goes: the Triton core, each preprocess instance, each engine.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


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
    """User + system CPU seconds of this process (the load generator)."""
    times = os.times()
    return times.user + times.system
