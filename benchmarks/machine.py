"""Describe the machine a benchmark ran on (every result file names it)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any


def describe_machine() -> dict[str, Any]:
    """CPU model, core count, memory, and the GPU where one is present."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"MemTotal:\s*(\d+) kB", meminfo.read_text())
        memory_gib = round(int(match.group(1)) / 2**20, 1) if match else None
    gpu = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        gpu = (
            subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,memory.total,driver_version",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_slug(machine: dict[str, Any]) -> str:
    """A short file-name-safe label: ``gpu-name`` or ``cpu-Ncores``."""
    label = machine["gpu"].split(",")[0] if machine["gpu"] else f"cpu-{machine['cores']}cores"
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
