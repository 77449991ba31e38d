import csv
import io
import subprocess

import numpy as np
import pydicom
import pytest

from aln.synthetic import TRANSFER_SYNTAXES, VENDORS
from aln.synthetic.cohort import MANIFEST_COLUMNS, write_cohort
from aln.synthetic.mammogram import synth_case


def test_seeded_and_reproducible():
    a = synth_case(np.random.default_rng(11), "ge", "explicit", shape=(400, 300))
    b = synth_case(np.random.default_rng(11), "ge", "explicit", shape=(400, 300))
    ds_a, ds_b = (pydicom.dcmread(io.BytesIO(c.dicom)) for c in (a, b))
    assert (
        ds_a.PixelData == ds_b.PixelData
        and a.lesion_centre == b.lesion_centre
        and a.label == b.label
    )


def test_vendor_geometry_attributes():
    ge = pydicom.dcmread(
        io.BytesIO(synth_case(np.random.default_rng(0), "ge", shape=(300, 300)).dicom)
    )
    assert (
        ge.ImagerPixelSpacing == [0.0941, 0.0941]
        and ge.EstimatedRadiographicMagnificationFactor == 1
    )
    assert ge.VOILUTFunction == "SIGMOID" and "VOILUTSequence" in ge
    hologic = pydicom.dcmread(
        io.BytesIO(synth_case(np.random.default_rng(0), "hologic", shape=(300, 300)).dicom)
    )
    assert (
        hologic.ImagerPixelSpacing == [0.07, 0.07]
        and hologic.EstimatedRadiographicMagnificationFactor == 1.07
    )
    assert list(hologic.WindowCenterWidthExplanation) == ["NORMAL", "HARDER", "SOFTER"]
    fuji = pydicom.dcmread(
        io.BytesIO(synth_case(np.random.default_rng(0), "fuji", shape=(300, 300)).dicom)
    )
    assert (
        fuji.PhotometricInterpretation == "MONOCHROME1"
        and fuji.PixelSpacingCalibrationType == "GEOMETRY"
    )


def test_manifest(tmp_path):
    manifest = write_cohort(tmp_path, 5, seed=3, shape=(400, 320))
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 5 and tuple(rows[0]) == MANIFEST_COLUMNS
    assert {r["vendor"] for r in rows} == {"ge", "hologic", "siemens", "fuji"}
    for row in rows:
        assert (tmp_path / row["file"]).exists()
        assert float(row["lesion_x0"]) < float(row["lesion_x"]) < float(row["lesion_x1"])
        assert row["label"] in ("0", "1")


# dicom3tools 2022 predates the HTJ2K transfer syntaxes (2023), so it cannot read those files.
VALIDATED = [
    (v, ts)
    for v in VENDORS
    for ts in TRANSFER_SYNTAXES
    if ts != "htj2k" and (v in ("ge", "hologic") or ts == "explicit")
]


@pytest.mark.parametrize(("vendor", "transfer_syntax"), VALIDATED)
def test_objects_pass_dciodvfy(tmp_path, vendor, transfer_syntax):
    case = synth_case(
        np.random.default_rng(1), vendor, transfer_syntax, shape=(300, 240), view="MLO"
    )
    path = tmp_path / "x.dcm"
    path.write_bytes(case.dicom)
    # dciodvfy comes from Debian's dicom3tools, installed by `make install`.
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    errors = [
        line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")
    ]
    assert not errors, errors
