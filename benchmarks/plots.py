"""PNG plots of benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def device_label(machine: dict[str, Any]) -> str:
    """``GPU name`` or ``CPU model (N cores)``: how every plot and table names a machine."""
    if machine.get("gpu"):
        return str(machine["gpu"]).split(",")[0]
    return f"{machine['cpu']} ({machine['cores']} cores)"


def _series(ax_latency: Any, ax_throughput: Any, result: dict[str, Any], name: str) -> None:
    levels = [row for row in result["levels"] if row["latency_ms"]]
    concurrency = [row["concurrency"] for row in levels]
    for q, style in (("p50", "-"), ("p99", "--")):
        ax_latency.plot(
            concurrency, [row["latency_ms"][q] for row in levels], style, marker="o",
            label=f"{name} {q}",
        )  # fmt: skip
    ax_throughput.plot(
        concurrency, [row["throughput_per_s"] for row in levels], marker="o", label=name
    )


def plot_sweeps(results: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Latency percentiles and throughput vs concurrency, one series per latency result."""
    fig, (ax_latency, ax_throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for result in results:
        _series(
            ax_latency,
            ax_throughput,
            result,
            f"{result['label']} @ {device_label(result['machine'])}",
        )
    ax_latency.set(xlabel="concurrent requests", ylabel="latency (ms)", yscale="log")
    ax_throughput.set(xlabel="concurrent requests", ylabel="studies / s")
    for ax in (ax_latency, ax_throughput):
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_engines(results: list[dict[str, Any]], out: Path) -> Path:
    """Images/s per engine and batch size, one group of bars per device and backbone."""
    fig, ax = plt.subplots(figsize=(11, 4.2))
    bars: list[tuple[str, float]] = []
    for result in results:
        device = device_label(result["machine"])
        for row in result["results"]:
            for key, value in row.items():
                if key.endswith("_img_s") and value is not None:
                    engine = key.removesuffix("_img_s")
                    bars.append((f"{device}\n{row['backbone']} b{row['batch']} {engine}", value))
    ax.barh([b[0] for b in bars], [b[1] for b in bars])
    ax.set(xlabel="images / s", xscale="log")
    ax.tick_params(axis="y", labelsize=6)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
