"""Benchmark workloads: synthetic studies per transfer syntax, or a cohort folder as `aln synth`
writes it (`aln bench latency --input DIR`)."""

from __future__ import annotations

import csv

import pytest

from aln.benchmarks import workload
from aln.synthetic.cohort import write_cohort
from aln.training.errors import CohortError


def test_cohort_folder_becomes_studies_with_its_regions_and_auxiliary(tmp_path):
    manifest = write_cohort(tmp_path, 2, seed=3, vendor="ge", shape=(600, 500))
    rows = list(csv.DictReader(manifest.open()))
    plain = workload.from_cohort(tmp_path)
    assert plain.description["studies"] == 2 and not plain.description["auxiliary"]
    first = plain.studies[0]
    assert first.primary.lesion == (float(rows[0]["lesion_x"]), float(rows[0]["lesion_y"]))
    assert first.primary.bbox == tuple(
        float(rows[0][k]) for k in ("lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1")
    )
    assert first.primary.dicom_bytes() == (tmp_path / rows[0]["file"]).read_bytes()
    assert first.auxiliary is None
    with_aux = workload.from_cohort(manifest, auxiliary=True)
    assert with_aux.studies[1].auxiliary.lesion == (
        float(rows[1]["aux_x"]),
        float(rows[1]["aux_y"]),
    )
    assert with_aux.study(5) is with_aux.studies[1]  # studies are sent in turn


def test_bad_workloads_are_refused_naming_the_cause(tmp_path):
    with pytest.raises(ValueError, match="Unknown transfer syntax 'jpeg3000'"):
        workload.synthetic(("jpeg3000",))
    with pytest.raises(ValueError, match="at least one study"):
        workload.Workload([])
    (tmp_path / "manifest.csv").write_text("file,lesion_x\n")
    with pytest.raises(CohortError, match="lacks column"):
        workload.from_cohort(tmp_path)
