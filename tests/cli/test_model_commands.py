"""``aln init-demo`` and ``aln export`` as a user runs them."""

import json
import subprocess
import sys


def aln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aln", *args], capture_output=True, text=True, check=False
    )


def test_init_demo_then_export_reports_parity(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "export"
    made = aln("init-demo", "--out", str(ckpt), "--backbone", "efficientnet_b0", "--seed", "2")
    assert made.returncode == 0, made.stderr
    assert "NO clinical validity" in made.stdout
    exported = aln("export", str(ckpt), "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    report = json.loads(exported.stdout)
    assert report["parity"]["passed"] and report["backbone"] == "efficientnet_b0"


def test_bad_checkpoint_and_options_exit_2(tmp_path):
    missing = aln("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "has no manifest.json" in missing.stderr
    fp16 = aln("export", str(tmp_path), "--out", str(tmp_path / "x"), "--precision", "fp16")
    assert fp16.returncode == 2 and "'fp16' is invalid for onnx engines" in fp16.stderr
    assert not (tmp_path / "x").exists()
