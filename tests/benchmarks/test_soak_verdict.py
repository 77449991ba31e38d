"""The soak benchmark's verdict arithmetic, without a server."""

from __future__ import annotations

import pytest

from aln.benchmarks.soak import verdict


def _window(k, throughput, p99):
    return {"window": k, "throughput_per_s": throughput, "errors": 0, "p99_ms": p99}


def test_memory_growth_is_the_second_half_slope_per_ten_minutes():
    # 1000 MB flat for 10 minutes, then +10 MB per minute: 1% per minute = 10% per 10 minutes
    memory = [(t, {"a": 1000.0 + max(0.0, t - 600) / 6}) for t in range(0, 1201, 10)]
    result = verdict(memory, [], 1200.0, 60.0, 2.0)
    assert result["memory_growth_per_10_min"] == pytest.approx(0.095, abs=0.01)
    assert result["memory_plateaus"] is False
    flat = verdict([(t, {"a": 1000.0}) for t in range(0, 1201, 10)], [], 1200.0, 60.0, 2.0)
    assert flat["memory_growth_per_10_min"] == 0 and flat["memory_plateaus"] is True


def test_drift_is_against_the_first_complete_window_after_warm_up():
    windows = [_window(0, 9.0, 9000.0)]  # warm-up: ignored
    windows += [_window(k, 2.0, 500.0) for k in range(1, 4)]
    windows += [_window(4, 2.1, 540.0), _window(5, 0.01, 100.0)]  # the last is partial
    result = verdict([(0.0, {"a": 1.0})], windows, 300.0, 60.0, 2.0)
    assert result["max_throughput_drift"] == pytest.approx(0.05)
    assert result["max_p99_drift"] == pytest.approx(0.08)
    assert result["steady"] is True
    assert result["arrival_noise"] == pytest.approx(1 / (120**0.5), abs=1e-3)


def test_halves_compare_the_mean_rate_and_the_median_window_p99_of_the_steady_windows():
    # 660 s: windows 0-2 warm-up (the first quarter), 3-10 steady, 11 partial; a noisy minute in
    # each half of the steady windows
    rates = [9.0] * 3 + [2.0, 2.0, 2.6, 2.0] + [2.2, 2.2, 1.6, 2.2] + [0.1]
    tails = [9e3] * 3 + [500.0, 500.0, 900.0, 500.0] + [540.0, 540.0, 100.0, 540.0] + [10.0]
    windows = [_window(k, r, t) for k, (r, t) in enumerate(zip(rates, tails, strict=True))]
    result = verdict([(0.0, {"a": 1.0})], windows, 660.0, 60.0, 2.0)
    # earlier half: rate 2.15, median p99 500; later half: rate 2.05, median p99 540
    assert result["halves_throughput_drift"] == pytest.approx(0.1 / 2.15, abs=1e-3)
    assert result["halves_p99_drift"] == pytest.approx(0.08)
    assert result["halves_steady"] is True
    assert result["steady"] is False  # minute by minute, the noisy minutes miss
    slower = [
        _window(k, r, t * (2 if k >= 7 else 1))
        for k, (r, t) in enumerate(zip(rates, tails, strict=True))
    ]
    assert verdict([(0.0, {"a": 1.0})], slower, 660.0, 60.0, 2.0)["halves_steady"] is False


def test_a_variant_summary_keeps_what_the_verdict_was_made_from(tmp_path):
    """Each side-by-side variant is judged by the same verdict, from samples kept in the file."""
    from aln.benchmarks.soak import SoakRecord, plot_variants, summary

    growing = SoakRecord(
        completions=[(t + 0.5, 400.0) for t in range(600)],
        memory=[
            (float(t), {"tritonserver": 500.0 + t, "preprocess": 300.0}) for t in range(0, 600, 10)
        ],
    )
    flat = SoakRecord(
        completions=[(t + 0.5, 400.0) for t in range(600)],
        memory=[
            (float(t), {"tritonserver": 350.0, "preprocess": 300.0}) for t in range(0, 600, 10)
        ],
        errors={"UNAVAILABLE": 2},
    )
    reports = {name: summary(r, 1.0, 600.0, 60.0) for name, r in (("a", growing), ("b", flat))}
    assert reports["a"]["verdict"]["memory_plateaus"] is False
    assert reports["b"]["verdict"]["memory_plateaus"] is True
    assert reports["b"]["errors"] == {"UNAVAILABLE": 2}
    assert reports["a"]["memory_mb"][1] == {"t_s": 10.0, "tritonserver": 510.0, "preprocess": 300.0}
    assert reports["a"]["windows"][0]["throughput_per_s"] == 1.0
    plot_variants(reports, tmp_path / "variants.png", "two variants")
    assert (tmp_path / "variants.png").stat().st_size > 10_000


def test_an_updated_result_file_keeps_the_verdict_its_run_wrote(tmp_path):
    import json

    from aln.benchmarks.soak import update_verdict, verdict_of

    path = tmp_path / "soak.json"
    windows = [_window(k, 2.0, 500.0) for k in range(6)]
    path.write_text(
        json.dumps(
            {
                "settings": {"duration_min": 5.0, "window_s": 60.0},
                "offered_per_s": 2.0,
                "windows": windows,
                "memory_mb": [{"t_s": float(t), "a": 100.0} for t in range(0, 300, 10)],
                "verdict": {"as": "run"},
            }
        )
    )
    for _ in range(2):  # a second update keeps the run's own verdict, not the first update's
        update_verdict(path, verdict_of(path))
    report = json.loads(path.read_text())
    assert report["verdict_as_run"] == {"as": "run"}
    assert report["verdict"]["halves_steady"] is True and "--update" in report["verdict_note"]
    assert report["windows"] == windows
