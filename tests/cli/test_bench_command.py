"""``aln bench`` as a user runs it: each benchmark's own options, reports, and bad arguments."""

import json
import subprocess
import sys


def aln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aln", *args], capture_output=True, text=True, check=False
    )


OWN_OPTION = {
    "latency": "--label",
    "compare": "--baseline-threads",
    "ablation": "--workloads",
    "baseline-threads": "--workers",
    "overhead": "--transfer-syntax",
    "engines": "--backbones",
    "fidelity": "--held-out",
    "crop": "--syntaxes",
    "search": "--p99-budget-ms",
    "report": "results",
    "fuzz": "--cases",
    "overload": "--factor",
    "soak": "--duration-min",
    "recovery": "--settle-s",
    "failover": "--before-s",
    "plan": "validate",
    "explain": "--chunks",
    "explain-evidence": "--untrained",
    "baseline": "--skip-absent-auxiliary",
}


def test_every_benchmark_is_listed_with_an_option_of_its_own():
    from aln.commands.bench import BENCHMARKS

    assert set(OWN_OPTION) == set(BENCHMARKS)


def test_bench_forwards_options_to_each_benchmark():
    """Each name reaches its own parser: its help shows an option only that benchmark has."""
    for name, option in OWN_OPTION.items():
        shown = aln("bench", name, "--help")
        assert shown.returncode == 0, (name, shown.stderr)
        assert option in shown.stdout, (name, shown.stdout)
        others = {o for n, o in OWN_OPTION.items() if n != name and o.startswith("--")}
        assert shown.stdout.count("--") < 60 and not all(o in shown.stdout for o in others)


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
