"""Describe the machine and software a benchmark ran on (every result file names both)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from aln.serving.cpu import CpuCapabilities, cpu_flags


def describe_machine() -> dict[str, Any]:
    """CPU model and flags, core count, memory, and the GPU where one is present."""
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
        "cpu_flags": cpu_flags(),
        "cpu_capabilities": CpuCapabilities.detect().describe(),
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


_PACKAGES = (
    "aln-triton",
    "torch",
    "timm",
    "onnxruntime",
    "tritonclient",
    "nvidia-pytriton",
    "pydicom",
)


def versions(triton_url: str | None = None) -> dict[str, str | None]:
    """Installed versions of the packages that shape the figures, and the server's, when asked."""
    found: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    if triton_url is not None:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(triton_url) as client:
            found["tritonserver"] = client.get_server_metadata(as_json=True).get("version")
    return found


RESULTS = Path(__file__).resolve().parent / "results"
"""Where result files go by default (``benchmarks/results/`` in a checkout)."""


def write_result(report: dict[str, Any], kind: str, out: Path | None = None) -> Path:
    """Write a result document as JSON to ``out`` or ``RESULTS/<kind>-<machine slug>.json``."""
    import json

    path = Path(out) if out else RESULTS / f"{kind}-{machine_slug(report['machine'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
