"""The studies a benchmark sends: synthetic ones per transfer syntax, or a cohort folder.

Every benchmark (latency sweep, baseline comparison, configuration search, locust) draws its
requests from a :class:`Workload`, so the same inputs reach every server compared.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aln.client import ImageInput, Study
from aln.preprocessing.contract import ImageOptions
from aln.preprocessing.crop import Region
from aln.synthetic import TRANSFER_SYNTAXES, Vendor
from aln.synthetic.mammogram import synth_case

VENDOR_CYCLE: tuple[Vendor, ...] = ("hologic", "ge", "siemens", "fuji")
"""Vendors of synthetic workloads, in turn (every grey-level convention, both photometries)."""


@dataclass(frozen=True)
class Workload:
    """Studies sent in turn, and what they are (recorded in every result file).

    Attributes:
        studies: The requests.
        description: Source, transfer syntaxes, auxiliary use and mean DICOM size.
    """

    studies: list[Study]
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.studies:
            raise ValueError("A workload needs at least one study")

    def summary(self) -> str:
        """One line for plot titles and logs."""
        d = self.description
        what = ", ".join(d.get("transfer_syntaxes", [])) or str(d.get("source"))
        aux = "with" if d.get("auxiliary") else "no"
        return f"{what}; {d.get('studies')} studies of {d.get('mean_dicom_mb')} MB; {aux} auxiliary"

    def study(self, i: int) -> Study:
        """The ``i``-th request (cycling)."""
        return self.studies[i % len(self.studies)]


def _mean_mb(studies: list[Study]) -> float:
    sizes = [len(s.primary.dicom_bytes()) for s in studies]
    return round(float(np.mean(sizes)) / 2**20, 2)


def synthetic(
    transfer_syntaxes: tuple[str, ...] = ("explicit",),
    *,
    auxiliary: bool = False,
    per_syntax: int = 2,
    seed: int = 0,
) -> Workload:
    """Full-size synthetic studies, ``per_syntax`` for each transfer syntax.

    Args:
        transfer_syntaxes: Names from :data:`aln.synthetic.vendors.TRANSFER_SYNTAXES`.
        auxiliary: Send an auxiliary region (on the primary image) with every study.
        per_syntax: Distinct studies per syntax (vendors in turn, both lateralities and views).
        seed: Random seed.

    Raises:
        ValueError: An unknown transfer syntax.
    """
    unknown = sorted(set(transfer_syntaxes) - set(TRANSFER_SYNTAXES))
    if unknown:
        raise ValueError(
            f"Unknown transfer syntax '{unknown[0]}'; choose from {', '.join(TRANSFER_SYNTAXES)}"
        )
    rng = np.random.default_rng(seed)
    studies = []
    for syntax in transfer_syntaxes:
        for i in range(per_syntax):
            case = synth_case(rng, VENDOR_CYCLE[i % len(VENDOR_CYCLE)], syntax)
            aux = ImageInput(case.dicom, case.auxiliary_centre) if auxiliary else None
            studies.append(Study(ImageInput(case.dicom, case.lesion_centre), case.clinical, aux))
    return Workload(
        studies,
        {
            "source": "synthetic",
            "transfer_syntaxes": list(transfer_syntaxes),
            "auxiliary": auxiliary,
            "studies": len(studies),
            "mean_dicom_mb": _mean_mb(studies),
        },
    )


def _image(path: Path, region: Region, options: ImageOptions) -> ImageInput:
    centre = (region.centre_x, region.centre_y)
    return ImageInput(path.read_bytes(), centre, region.bbox, **vars(options))


def from_cohort(manifest: Path, *, auxiliary: bool = False, limit: int | None = None) -> Workload:
    """Studies of a cohort manifest (the format ``aln synth`` writes and ``aln train`` reads).

    Args:
        manifest: ``manifest.csv`` or the folder holding it.
        auxiliary: Send each case's auxiliary region where the manifest gives one.
        limit: Use the first ``limit`` cases only.

    Raises:
        CohortError: The manifest is malformed (naming the line and column).
    """
    from aln.training.cohort import MANIFEST_NAME, read_cohort

    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / MANIFEST_NAME
    studies = []
    for case in read_cohort(manifest)[:limit]:
        primary = _image(case.primary, case.region, case.options)
        aux = None
        if auxiliary and case.auxiliary_region is not None:
            aux_file = case.auxiliary or case.primary
            aux = _image(aux_file, case.auxiliary_region, case.auxiliary_options)
        studies.append(Study(primary, case.clinical, aux))
    return Workload(
        studies,
        {
            "source": str(manifest),
            "auxiliary": auxiliary,
            "studies": len(studies),
            "mean_dicom_mb": _mean_mb(studies),
        },
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload options every served benchmark takes."""
    parser.add_argument(
        "--input",
        default="synth",
        help="'synth' (full-size synthetic studies) or a cohort folder/manifest.csv",
    )
    parser.add_argument(
        "--transfer-syntax",
        default="explicit",
        help=f"synthetic studies' syntaxes, comma-separated ({', '.join(TRANSFER_SYNTAXES)})",
    )
    parser.add_argument("--auxiliary", action="store_true", help="send an auxiliary region too")


def from_arguments(args: argparse.Namespace) -> Workload:
    """The workload :func:`add_arguments` describes."""
    if args.input == "synth":
        return synthetic(tuple(args.transfer_syntax.split(",")), auxiliary=args.auxiliary)
    return from_cohort(Path(args.input), auxiliary=args.auxiliary)
