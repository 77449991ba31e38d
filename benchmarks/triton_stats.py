"""Triton's own per-model statistics for a benchmark window: where the time went.

Triton keeps cumulative counters per model (``ModelStatistics`` of the KServe v2 protocol
extension). A benchmark snapshots them before and after its measured window and reports the
difference: per composing model, the requests executed, mean queue and compute time per request,
and the batch sizes the dynamic batcher actually formed.
"""

from __future__ import annotations

import time
from typing import Any

import tritonclient.grpc as grpcclient

_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
SETTLE_TIMEOUT_S = 5.0
"""How long :func:`settled` waits for the server to count requests it has already answered."""


def snapshot(url: str) -> dict[str, Any]:
    """Cumulative statistics of every loaded model, keyed by model name."""
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(as_json=True)
    return {entry["name"]: entry for entry in stats.get("model_stats", [])}


def counted(stats: dict[str, Any], model: str, outcome: str = "success") -> int:
    """Requests ``model`` counted in a :func:`snapshot` by ``outcome``: ``success`` or ``fail``."""
    entry = stats.get(model, {}).get("inference_stats", {}).get(outcome, {})
    return int(entry.get("count", 0))


def settled(
    url: str,
    before: dict[str, Any],
    answered: dict[str, int],
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> dict[str, Any]:
    """A :func:`snapshot` that counts every request already answered.

    Triton's backends record a request's statistics just after sending its response, so a
    snapshot taken the moment an answer arrives may miss the last step's time (and the next
    window would then miss or double it). This snapshots until each model in ``answered`` counts
    at least that many more successful requests than in ``before``.

    Raises:
        RuntimeError: A model has not counted them within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        now = snapshot(url)
        new = {model: counted(now, model) - counted(before, model) for model in answered}
        short = {model: n for model, n in new.items() if n < answered[model]}
        if not short:
            return now
        if time.monotonic() > deadline:
            missing = ", ".join(f"{m}: {n} of {answered[m]}" for m, n in short.items())
            raise RuntimeError(
                f"Triton's statistics did not count the requests it answered within "
                f"{timeout_s} s ({missing})"
            )
        time.sleep(0.001)


def _count_ns(entry: dict[str, Any]) -> tuple[int, int]:
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def _batch_counts(entry: dict[str, Any]) -> dict[int, int]:
    return {
        int(row["batch_size"]): _count_ns(row.get("compute_infer", {}))[0]
        for row in entry.get("batch_stats", [])
    }


def window(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-model figures for the window between two :func:`snapshot` calls.

    Returns:
        ``{model: {"requests", "failed", "executions", "mean_batch", "batch_sizes",
        "queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"}}`` where the
        ``*_ms`` figures are means per successful request and ``batch_sizes`` maps each batch
        size the batcher formed to how many times it ran. Models idle in the window are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, now in after.items():
        then = before.get(name, {})
        stats_now, stats_then = now.get("inference_stats", {}), then.get("inference_stats", {})
        requests = counted(after, name) - counted(before, name)
        failed = counted(after, name, "fail") - counted(before, name, "fail")
        executions = int(now.get("execution_count", 0)) - int(then.get("execution_count", 0))
        inferences = int(now.get("inference_count", 0)) - int(then.get("inference_count", 0))
        if requests <= 0 and failed <= 0:
            continue
        row: dict[str, Any] = {
            "requests": requests,
            "failed": failed,
            "executions": executions,
            "mean_batch": round(inferences / executions, 2) if executions else None,
        }
        for phase in _PHASES:
            ns = _count_ns(stats_now.get(phase, {}))[1] - _count_ns(stats_then.get(phase, {}))[1]
            row[f"{phase}_ms"] = round(ns / requests / 1e6, 2) if requests else None
        batches_then = _batch_counts(then)
        row["batch_sizes"] = {
            size: count - batches_then.get(size, 0)
            for size, count in sorted(_batch_counts(now).items())
            if count - batches_then.get(size, 0) > 0
        }
        out[name] = row
    return out


def repository_configs(url: str, models: list[str]) -> dict[str, dict[str, Any]]:
    """The served configuration of each model (batching, instances, queue policy)."""
    keep = ("max_batch_size", "instance_group", "dynamic_batching", "parameters", "backend")
    with grpcclient.InferenceServerClient(url) as client:
        configs = {name: client.get_model_config(name, as_json=True)["config"] for name in models}
    return {name: {k: v for k, v in cfg.items() if k in keep} for name, cfg in configs.items()}
