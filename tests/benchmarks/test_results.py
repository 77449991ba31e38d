"""Benchmark result arithmetic and reports, without a server: Triton statistics windows,
baseline ratios, the configuration search's choice, the cross-device report."""

from __future__ import annotations

import itertools
import json

import pytest

from aln.benchmarks import compare, report, search, triton_stats
from aln.benchmarks.latency import Tally, concurrency_list
from aln.client import InvalidInputError, ModelUnavailableError

MACHINE = {
    "cpu": "Test CPU",
    "cores": 2,
    "gpu": None,
    "memory_gib": 1,
    "python": "3",
    "platform": "x",
}


def _stats(success, queue_ns, infer_ns, executions, inferences, batches):
    return {
        "name": "backbone_primary",
        "execution_count": executions,
        "inference_count": inferences,
        "inference_stats": {
            "success": {"count": success, "ns": infer_ns},
            "fail": {"count": 0, "ns": 0},
            "queue": {"count": success, "ns": queue_ns},
            "compute_infer": {"count": success, "ns": infer_ns},
        },
        "batch_stats": [
            {"batch_size": size, "compute_infer": {"count": count, "ns": 1}}
            for size, count in batches.items()
        ],
    }


def test_triton_window_is_the_difference_of_two_snapshots():
    before = {"backbone_primary": _stats(10, 10e6, 100e6, 5, 10, {1: 2, 4: 2})}
    after = {
        "backbone_primary": _stats(30, 50e6, 500e6, 10, 30, {1: 2, 4: 5, 2: 1}),
        "idle": {"name": "idle", "inference_stats": {}},
    }
    window = triton_stats.window(before, after)
    assert set(window) == {"backbone_primary"}  # idle models are left out
    row = window["backbone_primary"]
    assert row["requests"] == 20
    assert row["executions"] == 5
    assert row["mean_batch"] == 4.0
    assert row["queue_ms"] == 2.0  # 40 ms over 20 requests
    assert row["compute_infer_ms"] == 20.0
    assert row["batch_sizes"] == {2: 1, 4: 3}


def test_settled_snapshots_until_the_server_counts_every_answered_request(monkeypatch):
    before = {"backbone_primary": _stats(10, 0, 0, 10, 10, {1: 10})}
    # the answer arrived before the backend recorded its statistics: the first snapshot lags
    late = iter([before, {"backbone_primary": _stats(11, 0, 7e6, 11, 11, {1: 11})}])
    monkeypatch.setattr(triton_stats, "snapshot", lambda url: next(late))
    after = triton_stats.settled("x", before, {"backbone_primary": 1})
    assert triton_stats.counted(after, "backbone_primary") == 11


def test_settled_names_the_model_whose_requests_are_never_counted(monkeypatch):
    before = {"backbone_primary": _stats(10, 0, 0, 10, 10, {1: 10})}
    monkeypatch.setattr(triton_stats, "snapshot", lambda url: before)
    with pytest.raises(RuntimeError, match=r"within 0.01 s \(backbone_primary: 0 of 2\)"):
        triton_stats.settled("x", before, {"backbone_primary": 2}, timeout_s=0.01)


def test_tally_counts_errors_by_status_and_throughput_over_the_window():
    tally = Tally()
    for i in range(10):
        tally.record(i * 0.1, i * 0.1 + 0.2, None)
    tally.record(0.5, 0.6, InvalidInputError("bad", "INVALID_ARGUMENT"))
    tally.record(0.5, 0.6, ModelUnavailableError("busy", "UNAVAILABLE"))
    summary = tally.summary()
    assert summary["ok"] == 10 and summary["requests"] == 12
    assert summary["errors"] == {"INVALID_ARGUMENT": 1, "UNAVAILABLE": 1}
    assert summary["throughput_per_s"] == pytest.approx(10 / 1.1, rel=1e-3)
    assert summary["latency_ms"]["p50"] == pytest.approx(200.0)


def test_sweep_of_an_unreachable_server_fails_fast_and_says_so():
    from aln.benchmarks.latency import sweep
    from aln.benchmarks.workload import Workload
    from aln.client import ImageInput, Study
    from aln.serving.server import free_port

    studies = Workload([Study(ImageInput(b"x", (1.0, 1.0)), {})])
    with pytest.raises(ModelUnavailableError, match="was not ready within 1 s"):
        sweep(f"127.0.0.1:{free_port()}", studies, [1], duration_s=1, ready_timeout_s=1)


def test_concurrency_list_rejects_nonsense():
    assert concurrency_list("1,2,8") == [1, 2, 8]
    for bad in ("0,1", "a", ""):
        with pytest.raises(Exception, match="concurrency|integers"):
            concurrency_list(bad)


def _sweep(label, rows):
    return {
        "benchmark": "latency",
        "label": label,
        "machine": MACHINE,
        "workload": {"source": "synthetic", "transfer_syntaxes": ["explicit"], "auxiliary": False},
        "levels": [
            {
                "concurrency": c,
                "throughput_per_s": t,
                "latency_ms": {"p50": p99 / 2, "p99": p99},
                "errors": errors,
            }
            for c, t, p99, errors in rows
        ],
    }


def test_compare_ratios_per_concurrency():
    ours = _sweep("aln_ensemble", [(1, 6.0, 200.0, {}), (8, 9.0, 1000.0, {})])
    naive = _sweep("baseline", [(1, 3.0, 400.0, {}), (8, 4.0, 2500.0, {})])
    rows = compare.ratios(ours, naive)
    assert [r["throughput_ratio"] for r in rows] == [2.0, 2.25]
    assert [r["p99_ratio"] for r in rows] == [0.5, 0.4]
    equal = _sweep("equal-work", [(1, 4.0, 300.0, {}), (8, 6.0, 1500.0, {})])
    table = compare.format_ratios(_compare_doc(ours, equal, naive))
    assert (
        "| explicit | 8 | 9.0 | 6.0 | **1.5x** | 4.0 | 2.25x | 1000.0 / 1500.0 / 2500.0 |" in table
    )


def test_engines_are_set_against_the_fp32_ensemble():
    fp32 = _sweep("ensemble", [(8, 4.0, 3000.0, {})])
    int8 = _sweep("openvino/int8", [(8, 6.0, 2400.0, {})])
    doc = {
        "engines": {
            "openvino/int8": {
                "export": "x",
                "ratios": {"explicit": compare.ratios(int8, fp32)},
            }
        },
        "workloads": {"explicit": {"ensemble": fp32, "openvino/int8": int8, "ratios": {}}},
    }
    table = compare.format_engines(doc)
    assert "| openvino/int8 | explicit | 8 | 6.0 | 4.0 | **1.5x** | 2400.0 | 3000.0 |" in table
    assert compare.format_ratios(doc) == ""  # no baselines were swept


def _compare_doc(ours, equal, naive):
    return {
        "benchmark": "compare",
        "machine": MACHINE,
        "workloads": {
            "explicit": {
                "ensemble": ours,
                "equal-work": equal,
                "naive": naive,
                "ratios": {
                    "equal-work": compare.ratios(ours, equal),
                    "naive": compare.ratios(ours, naive),
                },
            }
        },
    }


def test_named_workloads_take_a_syntax_and_an_optional_auxiliary():
    with pytest.raises(ValueError, match="workload of 'explicit\\+lesion' is invalid"):
        compare.named_workloads("explicit+lesion")


def test_search_picks_the_fastest_level_within_budget_and_without_errors():
    levels = _sweep(
        "x",
        [
            (4, 5.0, 900.0, {}),
            (8, 7.0, 1900.0, {}),
            (16, 8.0, 4000.0, {}),
            (12, 9.0, 100.0, {"UNAVAILABLE": 1}),
        ],
    )["levels"]
    assert search.best_within(levels, 2000.0)["concurrency"] == 8
    assert search.best_within(levels, 50.0) is None


def test_report_tables_every_kind_and_names_each_device(tmp_path):
    gpu = dict(MACHINE, gpu="NVIDIA H100 80GB HBM3, 81559 MiB, 550.54")
    files = []
    docs = {
        "latency-cpu.json": _sweep("aln_ensemble", [(1, 6.0, 200.0, {}), (8, 9.0, 1000.0, {})]),
        "latency-gpu.json": dict(_sweep("aln_ensemble", [(8, 90.0, 150.0, {})]), machine=gpu),
        "compare.json": _compare_doc(
            _sweep("aln_ensemble", [(8, 9.0, 1000.0, {})]),
            _sweep("equal-work", [(8, 6.0, 1500.0, {})]),
            _sweep("naive", [(8, 4.0, 2500.0, {})]),
        ),
        "engines.json": {
            "benchmark": "engines",
            "machine": gpu,
            "results": [
                {"backbone": "swinv2_tiny_window8_256", "batch": 8, "cuda_fp16_img_s": 900.0}
            ],
        },
    }
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc))
        files.append(tmp_path / name)
    path = report.write_report(files, tmp_path / "out")
    text = path.read_text()
    assert "Test CPU (2 cores)" in text and "NVIDIA H100 80GB HBM3" in text
    assert "| **1.5x** |" in text and "| 2.25x |" in text
    assert "cuda_fp16 | 900.0" in text
    assert (tmp_path / "out" / "report-latency.png").stat().st_size > 1000
    assert (tmp_path / "out" / "report-engines.png").stat().st_size > 1000


def test_report_refuses_a_file_that_is_not_a_result(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text("[1, 2]")
    with pytest.raises(report.ReportError, match="notes.json.*not a benchmark result"):
        report.write_report([bad], tmp_path / "out")
    with pytest.raises(report.ReportError, match="Cannot read result file"):
        report.write_report([tmp_path / "missing.json"], tmp_path / "out")


def test_the_ablation_changes_one_thing_at_a_time_and_ends_at_the_served_default():
    from dataclasses import asdict, fields

    from aln.benchmarks.ablation import ladder
    from aln.benchmarks.baseline import BaselineOptions
    from aln.serving.spec import RepositorySpec

    naive = BaselineOptions(threads=1, workers=2)
    steps = ladder(naive)
    baselines = [s.baseline for s in steps if s.baseline is not None]
    assert baselines[0] == naive and baselines[1] == BaselineOptions(
        workers=2, threads=1, engine="onnxruntime"
    )
    defaults = asdict(RepositorySpec(1, 1))
    triton = [{**defaults, **s.spec} for s in steps if s.baseline is None]
    assert triton[0]["engine_threads"] == naive.threads  # into Triton with the same threads
    for before, after in itertools.pairwise(triton):
        changed = {k for k in after if after[k] != before[k]}
        assert len(changed) == 1 or changed == {"backbone_instances", "engine_threads"}, changed
    assert triton[-1] == defaults
    assert {f.name for f in fields(RepositorySpec)} >= {"decode", "skip_absent_auxiliary"}


def test_compare_takes_each_baselines_best_from_the_threads_sweep(tmp_path):
    sweep = {
        "best": {
            "naive": {"threads": 1, "workers": 4},
            "equal-work": {"threads": 1, "workers": 2},
        }
    }
    (tmp_path / "baseline_threads-x.json").write_text(json.dumps(sweep))
    chosen, source = compare.tuned_baselines(tmp_path / "baseline_threads-x.json")
    assert (chosen["naive"].threads, chosen["naive"].workers) == (1, 4)
    assert not chosen["naive"].skip_absent_auxiliary
    assert (chosen["equal-work"].workers, chosen["equal-work"].skip_absent_auxiliary) == (2, True)
    assert source.endswith("baseline_threads-x.json")
