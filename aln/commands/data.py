"""``aln synth`` and ``aln preprocess``: synthetic mammograms and the preprocessing on one file."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aln.preprocessing.crop import CROP_METHODS, CropSpec

CROP_DEFAULTS = CropSpec()
"""The crop arguments' defaults are the crop spec's own."""


def register(commands: Any) -> None:
    """Add the data subcommands to the ``aln`` parser."""
    from aln.synthetic import TRANSFER_SYNTAXES, VENDORS

    synth = commands.add_parser(
        "synth",
        help="write synthetic mammograms (MG For Presentation) and manifest.csv",
        description="Write seeded synthetic Digital Mammography For Presentation objects with "
        "vendor-like geometry, a lesion of known size and place, and manifest.csv.",
    )
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    synth.add_argument(
        "--cohort",
        type=int,
        metavar="N",
        help="write an N-case multi-centre cohort with known labels instead: "
        "centres A-C internal (train/val/test), D external (another vendor)",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--vendor",
        choices=VENDORS,
        default=None,
        help="vendor profile (default: cycle ge, hologic, siemens, fuji)",
    )
    synth.add_argument("--transfer-syntax", choices=TRANSFER_SYNTAXES, default="explicit")
    synth.add_argument(
        "--shape",
        type=_shape,
        default=None,
        metavar="ROWSxCOLS",
        help="image matrix instead of the vendor's full detector (same spacing)",
    )
    synth.set_defaults(handler=run_synth)

    pre = commands.add_parser(
        "preprocess",
        help="crop one DICOM the way the server does and print the provenance",
        description="Run the one preprocessing on a DICOM file: decode only the crop, VOI, "
        "orientation, spacing at the breast, crop, resize, normalise.",
    )
    pre.add_argument("file", type=Path, help="DICOM file")
    pre.add_argument(
        "--lesion",
        type=float,
        nargs=2,
        required=True,
        metavar=("X", "Y"),
        help="lesion centre, stored-pixel column and row",
    )
    pre.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="lesion bounding box, stored pixels",
    )
    crop_arguments(pre)
    pre.add_argument("--spacing-mm", type=float, help="spacing when the header has none")
    pre.add_argument("--laterality", choices=("L", "R"), help="override laterality")
    pre.add_argument("--view", choices=("CC", "MLO"), help="override view")
    pre.add_argument("--out", type=Path, help="write the 256x256 grey crop as PNG")
    pre.add_argument("--npy", type=Path, help="write the float32 (3, 256, 256) tensor as .npy")
    pre.add_argument("--json", action="store_true", help="print the provenance as JSON")
    pre.set_defaults(handler=run_preprocess)


def crop_arguments(parser: argparse.ArgumentParser, *, method: bool = True) -> None:
    """The crop arguments (method and sizes), defaulting to :class:`CropSpec`'s own defaults.

    Args:
        parser: The subcommand's parser.
        method: Add ``--crop`` (a grid of methods takes its own list instead).
    """
    if method:
        parser.add_argument("--crop", choices=CROP_METHODS, default=CROP_DEFAULTS.method)
    parser.add_argument(
        "--size-mm",
        type=float,
        default=CROP_DEFAULTS.size_mm,
        help=f"fixed_mm side at the breast (default {CROP_DEFAULTS.size_mm:g})",
    )
    parser.add_argument(
        "--size-px",
        type=int,
        default=CROP_DEFAULTS.size_px,
        help=f"fixed_px side in stored pixels (default {CROP_DEFAULTS.size_px})",
    )
    parser.add_argument(
        "--margin-mm",
        type=float,
        default=CROP_DEFAULTS.margin_mm,
        help=f"lesion_bbox_margin margin (default {CROP_DEFAULTS.margin_mm:g})",
    )


def crop_spec(args: argparse.Namespace) -> CropSpec:
    """The crop spec the crop arguments describe."""
    return CropSpec(
        method=getattr(args, "crop", CROP_DEFAULTS.method),
        size_mm=args.size_mm,
        size_px=args.size_px,
        margin_mm=args.margin_mm,
    )


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not ROWSxCOLS, e.g. 1024x832") from exc
    if rows < 64 or cols < 64:
        raise argparse.ArgumentTypeError(f"'{text}' is too small, each side must be >= 64")
    return rows, cols


def run_synth(args: argparse.Namespace) -> int:
    """Write the synthetic cohort."""
    from aln.synthetic.cohort import write_cohort

    n = args.cohort or args.n
    manifest = write_cohort(
        args.out,
        n,
        args.seed,
        args.vendor,
        args.transfer_syntax,
        args.shape,
        cohort=args.cohort is not None,
    )
    print(f"wrote {n} DICOM files and {manifest}")
    return 0


def run_preprocess(args: argparse.Namespace) -> int:
    """Preprocess one file and report."""
    import numpy as np

    from aln.preprocessing import ImageOptions, PreprocessingError, Region
    from aln.preprocessing.pipeline import preprocess_image

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise PreprocessingError(f"Cannot read '{args.file}': {exc.strerror}") from exc
    region = Region(args.lesion[0], args.lesion[1], tuple(args.bbox) if args.bbox else None)
    options = ImageOptions(laterality=args.laterality, view=args.view, spacing_mm=args.spacing_mm)
    result = preprocess_image(data, region, crop_spec(args), options)
    if args.out:
        from PIL import Image

        Image.fromarray(np.rint(result.grey * 255).astype(np.uint8)).save(args.out)
    if args.npy:
        np.save(args.npy, result.tensor)
    provenance = asdict(result.provenance)
    if args.json:
        json.dump(provenance, sys.stdout, indent=2)
        print()
    else:
        for key, value in provenance.items():
            print(f"{key:>20}: {value}")
    return 0
