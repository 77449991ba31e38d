"""Installs as users make them, each in a fresh virtual environment, against a real server.

* The client alone (``pip install`` of the wheel, no extras): ``aln --help`` and ``aln predict``
  work with no torch and no pydicom; a command that needs more says which extra, exit status 4.
* A non-editable wheel: ``aln build-repo`` and ``aln serve`` work away from the source tree (the
  adapters ship in the package). Its dependencies come from the development environment through a
  ``.pth`` line (installing torch again would take minutes); the ``aln`` it imports is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from aln.preprocessing import contract
from aln.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "examples" / "clinical_record.json"


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree (a build leaves build/ behind)."""
    source = tmp_path_factory.mktemp("source") / "aln-triton"
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    result = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w"]
        + [str(out), str(source)]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return next(out.glob("aln_triton-*.whl"))


def _venv(folder: Path) -> Path:
    result = _run([sys.executable, "-m", "venv", str(folder)])
    assert result.returncode == 0, result.stderr
    return folder / "bin"


@pytest.fixture(scope="module")
def client_bin(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A venv with only ``pip install aln_triton-*.whl`` (numpy + tritonclient[grpc])."""
    bin_dir = _venv(tmp_path_factory.mktemp("client") / "venv")
    result = _run([str(bin_dir / "pip"), "install", "-q", str(wheel)])
    assert result.returncode == 0, result.stderr[-3000:]
    return bin_dir


def test_the_client_install_has_no_torch_and_no_pydicom(client_bin: Path) -> None:
    for module in ("torch", "pydicom", "onnxruntime"):
        result = _run([str(client_bin / "python"), "-c", f"import {module}"])
        assert result.returncode != 0 and "No module named" in result.stderr, module
    assert _run([str(client_bin / "aln"), "--help"]).returncode == 0


def test_the_client_install_predicts_against_a_running_server(
    client_bin: Path, served: tuple, study: object, tmp_path: Path
) -> None:
    dicom = tmp_path / "study.dcm"
    dicom.write_bytes(study.dicom)  # type: ignore[attr-defined]
    x, y = study.lesion_centre  # type: ignore[attr-defined]
    result = _run(
        [str(client_bin / "aln"), "predict", str(dicom), "--lesion", str(x), str(y)]
        + ["--clinical", str(RECORD), "--url", served[2], "--json"]
    )
    assert result.returncode == 0, result.stderr
    assert '"probability"' in result.stdout and '"spacing_source"' in result.stdout


def test_a_command_that_needs_an_extra_names_it(client_bin: Path, tmp_path: Path) -> None:
    result = _run(
        [str(client_bin / "aln"), "preprocess", str(RECORD), "--lesion", "1", "1"], cwd=tmp_path
    )
    assert result.returncode == 4, result.stderr
    assert "needs the module 'pydicom'" in result.stderr
    assert "pip install 'aln-triton[preprocessing]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serving_without_the_server_wheel_names_it(client_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "repo" / contract.ENSEMBLE).mkdir(parents=True)
    (tmp_path / "repo" / contract.ENSEMBLE / "config.pbtxt").write_text("")
    result = _run([str(client_bin / "aln"), "serve", "--repo", str(tmp_path / "repo")])
    assert result.returncode == 4, result.stderr
    assert "'nvidia-pytriton' wheel, which is not installed" in result.stderr


@pytest.fixture(scope="module")
def wheel_bin(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    bin_dir = _venv(tmp_path_factory.mktemp("wheel") / "venv")
    python = bin_dir / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # the development environment's packages, without its editable finder (not a site dir)
    (Path(purelib.stdout.strip()) / "dev-dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    result = _run([str(bin_dir / "pip"), "install", "-q", "--no-deps", str(wheel)])
    assert result.returncode == 0, result.stderr[-3000:]
    return bin_dir


def test_a_wheel_install_builds_and_serves_a_repository(wheel_bin: Path, tmp_path: Path) -> None:
    where = _run(
        [str(wheel_bin / "python"), "-c", "import aln.serving; print(aln.serving.__file__)"],
        cwd=tmp_path,  # away from the source tree, whose aln/ would shadow the installed one
    )
    assert str(wheel_bin.parent) in where.stdout and str(ROOT) not in where.stdout, where
    aln = str(wheel_bin / "aln")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    steps = [
        [aln, "init-demo", "--out", "ckpt", "--backbone", "efficientnet_b0"],
        [aln, "build-repo", "ckpt", "--out", "repo", "--preprocess-instances", "1"],
        [aln, "synth", "--out", "study", "--n", "1", "--vendor", "ge", "--shape", "700x560"],
    ]
    for step in steps:
        result = _run(step, cwd=tmp_path, env=env)
        assert result.returncode == 0, (step, result.stderr[-3000:])
    adapter = (tmp_path / "repo" / contract.PREPROCESS / "1" / "model.py").read_text()
    assert "from aln.serving.triton_models import PreprocessModel" in adapter
    grpc = free_port()
    ports = ["--grpc-port", str(grpc), "--http-port", str(free_port())]
    ports += ["--metrics-port", str(free_port())]
    server = subprocess.Popen(
        [aln, "serve", "--repo", "repo", *ports, "--log", "server.log"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        lines = []
        for line in server.stdout:
            lines.append(line)
            if "aln_ensemble ready" in line:
                break
        assert lines and "aln_ensemble ready" in lines[-1], (tmp_path / "server.log").read_text()[
            -5000:
        ]
        import csv

        row = next(csv.DictReader((tmp_path / "study" / "manifest.csv").open()))
        result = _run(
            [aln, "predict", f"study/{row['file']}", "--lesion", row["lesion_x"], row["lesion_y"]]
            + ["--clinical", str(RECORD), "--url", f"127.0.0.1:{grpc}"],
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "P(axillary nodes positive after NAT)" in result.stdout
    finally:
        server.terminate()
        server.wait(timeout=60)
