"""``aln demo``: the main job of ``make run`` on a synthetic study."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``aln demo`` to the ``aln`` parser."""
    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic study (what `make run` does)",
        description="Write a synthetic study, preprocess it the way the server does, and print "
        "the provenance. Synthetic data and demo weights have no clinical validity.",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/demo"),
        help="where the synthetic study and outputs go (default runs/demo)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Synthesise one study and preprocess it."""
    import csv

    from aln.preprocessing import ClinicalSchema, Region, StudyInput, preprocess_study
    from aln.preprocessing.synth import write_cohort

    manifest = write_cohort(
        args.workdir / "study", 1, seed=args.seed, vendor="hologic", transfer_syntax="jpeg2000"
    )
    row = next(csv.DictReader(manifest.open()))
    dicom = (manifest.parent / row["file"]).read_bytes()
    region = Region(float(row["lesion_x"]), float(row["lesion_y"]))
    study = preprocess_study(StudyInput(dicom, region), row["clinical"], ClinicalSchema.load())
    print(f"synthetic study: {manifest.parent / row['file']} (no clinical content)")
    print(json.dumps(study.provenance, indent=2))
    print(
        f"primary_image {study.primary_image.shape} {study.primary_image.dtype}, "
        f"clinical_vector {study.clinical_vector.shape}"
    )
    return 0
