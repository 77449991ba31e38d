"""``aln synth`` and ``aln preprocess`` as a user runs them (subprocess, real exit codes)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest


def aln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aln", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    result = aln(
        "synth",
        "--out",
        str(out),
        "--n",
        "2",
        "--seed",
        "4",
        "--vendor",
        "ge",
        "--transfer-syntax",
        "jpeg2000",
        "--shape",
        "800x640",
    )
    assert result.returncode == 0, result.stderr
    return out, list(csv.DictReader((out / "manifest.csv").open()))


def test_preprocess_json_and_outputs(cohort, tmp_path):
    out, rows = cohort
    row = rows[0]
    png, npy = tmp_path / "crop.png", tmp_path / "crop.npy"
    result = aln(
        "preprocess",
        str(out / row["file"]),
        "--lesion",
        row["lesion_x"],
        row["lesion_y"],
        "--json",
        "--out",
        str(png),
        "--npy",
        str(npy),
    )
    assert result.returncode == 0, result.stderr
    provenance = json.loads(result.stdout)
    assert provenance["spacing_source"] == "imager_ermf" and provenance[
        "spacing_mm"
    ] == pytest.approx(0.0941)
    assert (
        provenance["transfer_syntax"] == "jpeg2000"
        and provenance["laterality"] == row["laterality"]
    )
    assert png.stat().st_size > 1000
    assert np.load(npy).shape == (3, 256, 256)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lesion", "99999", "10"], "lesion centre (99999.0, 10.0) is outside the image"),
        (["--lesion", "nan", "10"], "is not finite"),
        (["--lesion", "100", "100", "--bbox", "50", "50", "10", "60"], "inverted or empty"),
        (["--lesion", "100", "100", "--crop", "lesion_bbox"], "needs the lesion's bounding box"),
        (["--lesion", "100", "100", "--size-mm", "-3"], "size_mm of '-3.0' is invalid"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(cohort, args, message):
    out, rows = cohort
    result = aln("preprocess", str(out / rows[0]["file"]), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_not_dicom_and_missing_file_exit_2(cohort, tmp_path):
    out, _ = cohort
    result = aln("preprocess", str(out / "manifest.csv"), "--lesion", "1", "1")
    assert result.returncode == 2 and "not a DICOM Part 10 file" in result.stderr
    result = aln("preprocess", str(tmp_path / "absent.dcm"), "--lesion", "1", "1")
    assert result.returncode == 2 and "Cannot read" in result.stderr
