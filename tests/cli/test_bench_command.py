"""``aln bench`` as a user runs it: each benchmark's own options, reports, and bad arguments."""

import json
import subprocess
import sys


def aln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aln", *args], capture_output=True, text=True, check=False
    )


def test_bench_forwards_options_to_each_benchmark():
    for name in ("latency", "compare", "overhead", "engines", "crop", "search", "report"):
        shown = aln("bench", name, "--help")
        assert shown.returncode == 0, shown.stderr
        assert f"aln bench {name}" in shown.stdout or "usage:" in shown.stdout
    assert "--concurrency" in aln("bench", "latency", "--help").stdout


def test_bench_report_writes_markdown_and_refuses_non_results(tmp_path):
    result = {
        "benchmark": "engines",
        "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None},
        "results": [{"backbone": "resnet50", "batch": 8, "onnxruntime_img_s": 31.5}],
    }
    (tmp_path / "engines.json").write_text(json.dumps(result))
    made = aln("bench", "report", str(tmp_path / "engines.json"), "--out", str(tmp_path / "r"))
    assert made.returncode == 0, made.stderr
    assert (
        "| Test CPU (2 cores) | resnet50 | 8 | onnxruntime | 31.5 |"
        in (tmp_path / "r" / "report.md").read_text()
    )
    (tmp_path / "notes.json").write_text("{}")
    refused = aln("bench", "report", str(tmp_path / "notes.json"))
    assert refused.returncode == 2 and "notes.json" in refused.stderr


def test_bench_rejects_unknown_benchmarks_and_bad_levels():
    unknown = aln("bench", "warp-speed")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
    bad = aln("bench", "latency", "--url", "127.0.0.1:1", "--concurrency", "0,4")
    assert bad.returncode == 2 and "concurrency levels must be at least 1" in bad.stderr
