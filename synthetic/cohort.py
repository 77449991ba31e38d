"""Synthetic cohorts on disk: DICOM files and a cohort manifest in the format training reads.

The manifest's columns are the training format's own (:mod:`aln.training.cohort`), followed by
the ground truth a real cohort does not have (vendor, lesion size, margin, contrast, the label's
true probability).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from aln.preprocessing.clinical import ClinicalSchema
from aln.synthetic import VENDORS, Vendor
from aln.synthetic.mammogram import synth_case
from aln.training import cohort as columns

MANIFEST_COLUMNS = (
    columns.FILE,
    "vendor",
    "transfer_syntax",
    "laterality",
    "view",
    "monochrome1",
    "spacing_mm",
    *columns.region_columns(columns.LESION),
    "lesion_diameter_mm",
    "spiculated",
    *columns.region_columns(columns.AUXILIARY),
    "lesion_density",
    columns.CLINICAL,
    columns.LABEL,
    "true_probability",
    columns.SPLIT,
    columns.CENTRE,
    columns.OVERRIDES + "spacing_mm",
)
"""The manifest ``write_cohort`` writes: the training columns and the synthetic ground truth."""

COHORT_CENTRES: dict[Vendor, str] = {"hologic": "A", "ge": "B", "siemens": "C", "fuji": "D"}
"""Centres of ``--cohort`` designs: A-C are internal (train/val/test), D is the external test
centre: another vendor, MONOCHROME1, calibrated spacing, another detector pitch."""


def _plan(
    i: int, rng: np.random.Generator, vendor: Vendor | None, cohort: bool
) -> tuple[Vendor, str, str]:
    """Vendor, split and centre of case ``i``."""
    if cohort:
        if rng.random() < 0.2:
            return "fuji", "external", COHORT_CENTRES["fuji"]
        chosen: Vendor = ("hologic", "ge", "siemens")[int(rng.integers(0, 3))]
        split = str(rng.choice(["train", "val", "test"], p=[0.6, 0.2, 0.2]))
        return chosen, split, COHORT_CENTRES[chosen]
    chosen = vendor or VENDORS[i % (len(VENDORS) - 1)]  # film needs a caller spacing: opt-in
    return chosen, str(rng.choice(["train", "val", "test"], p=[0.6, 0.2, 0.2])), chosen


def write_cohort(
    out: Path,
    n: int,
    seed: int = 0,
    vendor: Vendor | None = None,
    transfer_syntax: str = "explicit",
    shape: tuple[int, int] | None = None,
    schema: ClinicalSchema | None = None,
    cohort: bool = False,
) -> Path:
    """Write ``n`` synthetic DICOMs and ``manifest.csv`` into ``out``; return the manifest path.

    Default: vendors cycle (or ``vendor``), split 60/20/20 train/val/test, centre = vendor.
    ``cohort=True``: the multi-centre design of :data:`COHORT_CENTRES`, about 20% external.
    Film cases store no spacing: their ``override_spacing_mm`` is what a caller must pass.
    """
    out.mkdir(parents=True, exist_ok=True)
    schema = schema or ClinicalSchema.load()
    manifest = out / columns.MANIFEST_NAME
    rng = np.random.default_rng(seed)
    plan_rng = np.random.default_rng(seed + 1)
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for i in range(n):
            chosen, split, centre = _plan(i, plan_rng, vendor, cohort)
            case = synth_case(rng, chosen, transfer_syntax, shape=shape)
            schema.validate(case.clinical)
            name = f"case{i:05d}_{case.vendor}_{case.laterality}{case.view}.dcm"
            (out / name).write_bytes(case.dicom)
            writer.writerow(
                [
                    name,
                    case.vendor,
                    case.transfer_syntax,
                    case.laterality,
                    case.view,
                    int(case.monochrome1),
                    round(case.spacing_mm, 6),
                    *case.lesion_centre,
                    *case.lesion_bbox,
                    case.lesion_diameter_mm,
                    int(case.spiculated),
                    *case.auxiliary_centre,
                    *case.auxiliary_bbox,
                    case.density,
                    json.dumps(case.clinical, sort_keys=True),
                    case.label,
                    case.true_probability,
                    split,
                    centre,
                    round(case.spacing_mm, 6) if case.vendor == "film" else "",
                ]
            )
    return manifest
