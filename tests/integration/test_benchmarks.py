"""Benchmark smoke tests against the real server: a short latency sweep with Triton's statistics,
the naive baseline answering like the ensemble, the overhead measurement, and a short headless
locust run whose invalid requests are counted as the right failure."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from aln.benchmarks import latency, overhead, processes, servers, triton_stats, workload
from aln.client import AlnClient, InvalidInputError
from aln.preprocessing import contract

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def explicit_workload():
    return workload.synthetic(("explicit",), per_syntax=1)


def test_latency_sweep_records_throughput_percentiles_and_triton_statistics(
    served, explicit_workload
):
    _, _, url = served
    result = latency.sweep(url, explicit_workload, [1, 2], duration_s=3, warmup_s=1)
    assert result["machine"]["cores"] >= 1 and result["versions"]["tritonserver"]
    assert result["repository"][contract.BACKBONE_PRIMARY]["max_batch_size"] == 8
    for level in result["levels"]:
        assert level["ok"] >= 2 and not level["errors"]
        assert (
            level["latency_ms"]["p50"] <= level["latency_ms"]["p99"] <= level["latency_ms"]["max"]
        )
        stats = level["triton"]
        assert stats[contract.PREPROCESS]["requests"] == level["ok"]
        backbone = stats[contract.BACKBONE_PRIMARY]
        assert sum(n * size for size, n in backbone["batch_sizes"].items()) == backbone["requests"]
        assert backbone["compute_infer_ms"] > 0


def test_baseline_answers_like_the_ensemble_and_names_bad_input(
    served, explicit_workload, tmp_path
):
    _, checkpoint, url = served
    study = explicit_workload.studies[0]
    with AlnClient(url) as client:
        expected = client.predict(study.primary, study.clinical)
    with servers.baseline(checkpoint, tmp_path) as naive, AlnClient(naive.url) as client:
        got = client.predict(study.primary, study.clinical)
        assert got.probability == pytest.approx(expected.probability, abs=1e-4)
        assert got.provenance["primary"] == expected.provenance["primary"]
        with pytest.raises(InvalidInputError, match="age_years"):
            client.predict(
                study.primary, {k: v for k, v in study.clinical.items() if k != "age_years"}
            )
        result = latency.sweep(naive.url, explicit_workload, [1], duration_s=2, warmup_s=0)
    assert result["levels"][0]["ok"] >= 1
    assert "triton" not in result["levels"][0] and result["repository"] == {}


def test_every_baseline_variant_answers_like_the_ensemble(served, tmp_path):
    """Equal-work and ONNX Runtime baselines change the work done, never the answer."""
    from aln.benchmarks.baseline import BaselineOptions
    from aln.export.onnx_export import GRAPH_FILES

    server, checkpoint, url = served
    study = workload.synthetic(("jpeg2000",), auxiliary=True, per_syntax=1).studies[0]
    with AlnClient(url) as client:
        alone = client.predict(study.primary, study.clinical)
        with_aux = client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
    # The served graphs are the checkpoint's export: lay them out as `aln export` names them.
    export = tmp_path / "export"
    export.mkdir()
    for model, name in GRAPH_FILES.items():
        (export / name).symlink_to(server.config.repository / model / "1" / "model.onnx")
    for options in (
        BaselineOptions(skip_absent_auxiliary=True),
        BaselineOptions(engine="onnxruntime", decode="region", skip_absent_auxiliary=True),
    ):
        running = servers.baseline(checkpoint, tmp_path, options, export)
        with running as base, AlnClient(base.url) as client:
            got = client.predict(study.primary, study.clinical)
            got_aux = client.predict(study.primary, study.clinical, auxiliary=study.auxiliary)
        assert got.probability == pytest.approx(alone.probability, abs=1e-4), options
        assert got_aux.probability == pytest.approx(with_aux.probability, abs=1e-4), options


def test_overhead_sets_both_transports_against_one_process(served, explicit_workload):
    server, _, url = served
    running = servers.Running(url, server.process.pid, server.config.repository)
    row = overhead.measure(running, explicit_workload, 2, duration_s=3, warmup_s=1)
    assert set(row["transports"]) == {"grpc", "shared_memory"}
    for transport in row["transports"].values():
        cpu = transport["cpu_core_ms_per_study"]
        assert {"tritonserver", contract.PREPROCESS, contract.BACKBONE_PRIMARY} <= set(cpu)
        assert cpu[contract.BACKBONE_PRIMARY] > cpu[contract.FUSION_HEAD]
        assert transport["served"]["errors"] == {}
        assert transport["non_engine_core_ms_per_study"] == pytest.approx(
            sum(cpu[name] for name in overhead.NON_ENGINE), abs=0.2
        )
        assert transport["served_fraction_of_one_process"] > 0
    alone = row["one_process"]
    # one lane per served preprocess instance, at the batch the server formed
    assert alone["lanes"] == 2 and alone["batch"] >= 1 and alone["studies"] > 0
    assert alone["cpu_core_ms_per_study"]["engines"] > alone["cpu_core_ms_per_study"]["preprocess"]


def test_locust_headless_run_counts_requests_and_invalid_ones_as_the_right_failure(
    served, tmp_path
):
    _, _, url = served
    prefix = tmp_path / "locust"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locustfile.py"),
        "--headless", "--host", url, "--users", "3", "--spawn-rate", "3", "--run-time", "12s", "--stop-timeout", "60",
        "--csv", str(prefix), "--html", str(tmp_path / "locust.html"),
        "--aln-syntaxes", "explicit", "--aln-invalid-share", "0.4", "--aln-aux-share", "0.5",
        "--only-summary",
    ]  # fmt: skip
    subprocess.run(command, check=False, capture_output=True, timeout=120)
    stats = {
        row["Name"]: row
        for row in csv.DictReader(Path(f"{prefix}_stats.csv").read_text().splitlines())
    }
    valid = {k: v for k, v in stats.items() if k.startswith("valid/")}
    invalid = {k: v for k, v in stats.items() if k.startswith("invalid/")}
    assert valid and sum(int(v["Request Count"]) for v in valid.values()) >= 3
    assert all(v["Failure Count"] == "0" for v in valid.values())
    assert invalid and all(v["Request Count"] == v["Failure Count"] for v in invalid.values())
    failures = list(csv.DictReader(Path(f"{prefix}_failures.csv").read_text().splitlines()))
    assert failures and all(
        f["Name"].startswith("invalid/") and "INVALID_ARGUMENT" in f["Error"] for f in failures
    )
    assert (tmp_path / "locust.html").stat().st_size > 1000


def test_a_short_soak_answers_everything_and_our_processes_stay_flat(served):
    """The soak benchmark's short version: 30 s at 3 studies/s, a leak in our code shows.

    The Python-backend processes (our preprocessing and engine code) must stay within 10% over
    the second half; about 40 studies pass in it, so a leak of 5 MB per study would add 200 MB
    to processes of about 1 GB. Triton's core is bounded loosely (its receive buffers and pools
    grow through the first minutes; the 30-minute soak measures where it levels off).

    ONNX Runtime's arena grows to the largest batch an engine has run, not with each study; a
    batch larger than any before, formed when the machine is busy, once grew the primary
    backbone by 125 MB in the second half. A burst at concurrency 8 first brings the arenas to
    batches the soak cannot exceed, so what grows after it is a leak.
    """
    import asyncio

    from aln.benchmarks import soak

    server, _, url = served
    studies = workload.synthetic(soak.SOAK_SYNTAXES, auxiliary=True, per_syntax=1)
    burst = [studies.study(i) for i in range(16)]
    with AlnClient(url, timeout_s=120) as client:
        client.predict_many(burst, concurrency=8)
    duration_s = 30.0
    record = asyncio.run(
        soak.offer(url, studies, 3.0, duration_s, server_pid=server.pid, sample_s=2.0)
    )
    assert record.errors == {} and len(record.completions) > 40
    assert {"tritonserver", "preprocess", "backbone_primary"} <= set(record.memory[-1][1])
    half = [mb for t, mb in record.memory if t >= duration_s / 2]

    def ours(mb):
        return sum(v for name, v in mb.items() if name != "tritonserver")

    assert ours(half[-1]) < 1.10 * ours(half[0]), [round(ours(mb)) for mb in half]
    assert half[-1]["tritonserver"] < 1.5 * half[0]["tritonserver"]
    windows = soak.per_window(record, 10.0)
    assert sum(w["throughput_per_s"] for w in windows) > 0
    result = soak.verdict(record.memory, windows, duration_s, 10.0, 3.0)
    assert result["memory_mb_second_half_mean"] > 0 and result["arrival_noise"] > 0


def test_plan_measurement_records_per_request_service_times_and_pools_its_rounds(served):
    from aln.benchmarks import plan, service_times

    server, _, url = served
    before = triton_stats.snapshot(url)
    requests = 4
    times = service_times.measure(
        url, ("explicit",), requests=requests, batch_sizes=(1, 2), repeats=1, pid=server.pid
    )
    after = triton_stats.snapshot(url)
    assert len(times.preprocess_ms["explicit"]) == requests
    assert min(times.preprocess_ms["explicit"]) > 0
    assert len(times.outside_ms["explicit"]) == requests and times.client_cpu_ms["explicit"] > 0
    assert min(times.fusion_ms) > 0 and times.engine_contended_ms
    # the same studies again while the auxiliary backbone executes back to back beside them
    assert len(times.outside_beside_ms["explicit"]) == requests
    assert min(times.preprocess_beside_ms["explicit"]) > 0
    # the auxiliary backbone really executed images (the studies' own calls there are all-zero
    # rows it skips in about a millisecond)
    busy_ms = service_times.model_ms(before, after, contract.BACKBONE_AUXILIARY)
    assert busy_ms > max(times.engine_ms["1"])
    # and its own batches of one took an engine's time there, not the skipped rows' millisecond
    assert times.engine_beside_ms[0] > 0.8 * min(times.engine_ms["1"])
    # on this CPU a batch of two costs the single-threaded instance about twice one
    assert min(times.engine_ms["2"]) > 1.3 * max(times.engine_ms["1"])
    assert times.batching["max_batch"] == 8 and times.batching["delay_ms"] == 5.0
    # each process's CPU per study, one at a time: the stubs that did the work, Triton's core
    # moving the tensors between the steps, and the caller; /proc counts the server's in clock
    # ticks, so each stub's figure may be short by a tick over the requests (two preprocess stubs)
    cpu = times.cpu_ms["explicit"]
    tick_ms = processes.TICK_S * 1000 / requests
    assert cpu[contract.PREPROCESS] + 2 * tick_ms > 0.5 * min(times.preprocess_ms["explicit"])
    assert cpu[contract.BACKBONE_PRIMARY] + tick_ms > 0.5 * min(times.engine_ms["1"])
    assert cpu["tritonserver"] > 0 and cpu[processes.CALLER] > 0
    studies = workload.synthetic(("explicit",), per_syntax=1)
    settings = {"duration_s": 2.0, "warmup_s": 0.5, "timeout_s": 60.0}
    rounds: list[int] = []
    levels = plan.interleaved_sweep(
        url, studies, [1, 2], 2, settings, lambda: rounds.append(len(rounds)), server.pid
    )
    assert rounds == [0, 1]  # once before each round
    for level in levels:
        assert len(level["rounds"]) == 2 and len(level["triton"]) == 2
        assert len(level["cpu"]) == 2
        for split in level["cpu"]:  # per round: the engine's CPU per study, the machine's shares
            assert split["core_ms_per_item"][contract.BACKBONE_PRIMARY] > 0
            assert sum(split["machine"].values()) == pytest.approx(1.0, abs=0.01)
        assert level["ok"] == sum(r["ok"] for r in level["rounds"]) and not level["errors"]
