"""PNG plots of benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save(fig: Any, out: Path) -> Path:
    """Lay ``fig`` out, write it to ``out`` as a PNG (110 dpi) and close it; returns ``out``."""
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


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
    return save(fig, out)


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
    return save(fig, out)


def plot_plan_validation(report: dict[str, Any], out: Path) -> Path:
    """Simulated beside measured throughput and p99 per concurrency (``plan validate``)."""
    rows = report["levels"]
    concurrency = [row["concurrency"] for row in rows]
    fig, (ax_latency, ax_throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for source, style in (("measured", "-"), ("simulated", "--")):
        ax_latency.plot(
            concurrency, [row[source]["p99_ms"] for row in rows], style, marker="o",
            label=f"{source} p99",
        )  # fmt: skip
        ax_throughput.plot(
            concurrency, [row[source]["throughput_per_s"] for row in rows], style, marker="o",
            label=source,
        )  # fmt: skip
    ax_latency.set(xlabel="concurrent requests", ylabel="p99 latency (ms)")
    ax_throughput.set(xlabel="concurrent requests", ylabel="studies / s")
    for ax in (ax_latency, ax_throughput):
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"capacity model vs measured sweep @ {device_label(report['machine'])}: worst error "
        f"{report['worst_error']:.1%} (tolerance {report['tolerance']:.0%})",
        fontsize=9,
    )
    return save(fig, out)


def plot_plan_network(report: dict[str, Any], out: Path) -> Path:
    """``aln bench plan network``: p99 against load per replica, replicas per scenario.

    Left, each node type's search runs with the p99 budget drawn across; right, the replicas each
    scenario needs per node type.
    """
    fig, (ax_search, ax_replicas) = plt.subplots(1, 2, figsize=(12, 4.5))
    budget = report["plan"]["p99_budget_ms"]
    for node in report["nodes"]:
        runs = sorted(node["search"], key=lambda run: run["rate_per_s"])
        ax_search.plot(
            [run["rate_per_s"] * 3600 for run in runs], [run["p99_ms"] for run in runs],
            marker="o", label=f"{node['name']} (best {node['best_per_s'] * 3600:.0f}/h)",
        )  # fmt: skip
    ax_search.axhline(budget, color="grey", linestyle=":", label=f"p99 budget {budget:.0f} ms")
    ax_search.set(
        xlabel="arrivals per replica per hour", ylabel="simulated p99 (ms)", xscale="log",
        yscale="log",
    )  # fmt: skip
    scenarios = list(dict.fromkeys(row["scenario"] for row in report["table"]))
    names = [node["name"] for node in report["nodes"]]
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        replicas = {r["scenario"]: r["replicas"] for r in report["table"] if r["node"] == name}
        xs = [j + i * width for j in range(len(scenarios))]
        bars = ax_replicas.bar(xs, [replicas[s] for s in scenarios], width, label=name)
        ax_replicas.bar_label(bars, fontsize=7)
    ax_replicas.set_xticks(
        [j + width * (len(names) - 1) / 2 for j in range(len(scenarios))],
        [s if len(s) < 28 else s[:26] + "…" for s in scenarios],
        fontsize=7,
        rotation=12,
    )
    ax_replicas.set(ylabel="replicas at the peak hour", yscale="log")
    for ax in (ax_search, ax_replicas):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"capacity plan from service times measured @ {device_label(report['machine'])}",
        fontsize=9,
    )
    return save(fig, out)
