r"""Does the occlusion map mean something? Importance inside the lesion vs the rest of the crop.

On the synthetic cohort the label depends on the primary lesion's size and margin, so a model
that learned it should lose most of its answer when the lesion is hidden. For each case of the
chosen splits this benchmark computes the map the served ``aln_explain`` computes (the same
:func:`aln.serving.occlusion.occlusion_map`, here over the checkpoint's torch network in
process: the served map equals it within 1e-3, ``tests/integration/test_explain.py``), takes
the lesion disc from the cohort's ground truth (centre and bounding box in stored pixels), maps
every cell centre of the crop back to stored pixels (undoing the mirror of a right breast), and
compares the mean absolute importance of the cells inside the lesion with the cells outside. A
trained model and an untrained one (same backbone, seeded random weights) are measured side by
side.

    aln bench explain-evidence --cohort runs/cohort --checkpoint runs/trained \
        [--untrained runs/demo] [--grid 8] [--splits test]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aln.benchmarks.machine import describe_machine, write_result
from aln.preprocessing import contract
from aln.serving.occlusion import DEFAULT_GRID, cell_edges, check_grid, occlusion_map
from aln.training.cohort import Case, read_cohort


def inside_and_outside(
    importance: npt.NDArray[np.float32],
    crop_box: tuple[int, int, int, int],
    flipped: bool,
    centre: tuple[float, float],
    radius: float,
) -> tuple[float, float, int]:
    """Mean |importance| inside the lesion disc, outside it, and how many cells are inside.

    A cell is inside when its centre, mapped back to stored pixels, lies in the disc.

    Args:
        importance: The map (grid, grid) over the crop as the backbone saw it.
        crop_box: The crop's ``(x0, y0, x1, y1)`` in stored pixels.
        flipped: Whether the crop was mirrored left-right after cutting.
        centre: The lesion centre in stored pixels.
        radius: The lesion radius in stored pixels.
    """
    grid = importance.shape[0]
    edges = cell_edges(grid)
    middle = (edges[:-1] + edges[1:]) / 2 / contract.IMAGE_SIZE  # fraction of the crop side
    x0, y0, x1, y1 = crop_box
    across = (1 - middle) if flipped else middle
    xs = x0 + across * (x1 - x0)
    ys = y0 + middle * (y1 - y0)
    inside = (xs[None, :] - centre[0]) ** 2 + (ys[:, None] - centre[1]) ** 2 <= radius**2
    magnitude = np.abs(importance)
    if inside.all() or not inside.any():
        return float("nan"), float("nan"), int(inside.sum())
    return float(magnitude[inside].mean()), float(magnitude[~inside].mean()), int(inside.sum())


def _callables(net: Any, tensors: Any) -> tuple[Any, Any]:
    """The backbone and head callables of :func:`occlusion_map` for one study (torch)."""
    import torch

    with torch.inference_mode():
        fixed = [
            net.backbone_auxiliary(torch.from_numpy(tensors.auxiliary_image[None])),
            torch.from_numpy(tensors.auxiliary_present[None]),
            torch.from_numpy(tensors.clinical_vector[None]),
        ]

    @torch.inference_mode()
    def backbone(crops: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = net.backbone_primary(torch.from_numpy(crops)).numpy()
        return out

    @torch.inference_mode()
    def logits(embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        rows = len(embeddings)
        inputs = [torch.from_numpy(embeddings), *(f.expand(rows, -1) for f in fixed)]
        out: npt.NDArray[np.float32] = net.fusion_head(*inputs)[0].numpy()
        return out

    return backbone, logits


def measure(checkpoint: Path, cases: list[Case], grid: int) -> dict[str, Any]:
    """The per-case comparison for one checkpoint."""
    from aln.model.checkpoint import load_checkpoint
    from aln.preprocessing.pipeline import StudyInput, preprocess_study

    net, manifest = load_checkpoint(checkpoint)
    rows: list[dict[str, Any]] = []
    for case in cases:
        tensors = preprocess_study(
            StudyInput(case.primary.read_bytes(), case.region, case.options),
            case.clinical if manifest.clinical_dim else {},  # an image-only model takes none
            manifest.schema,
            manifest.crop,
        )
        backbone, logits = _callables(net, tensors)
        base = float(logits(backbone(tensors.primary_image[None])).reshape(-1)[0])
        importance = occlusion_map(tensors.primary_image, base, grid, backbone, logits)
        primary = tensors.provenance["primary"]
        bbox = case.region.bbox
        if bbox is None:
            raise ValueError(f"Case {case.case_id} has no lesion bounding box in the manifest")
        inside, outside, cells = inside_and_outside(
            importance,
            tuple(primary["crop_box"]),
            bool(primary["flipped"]),
            (case.region.centre_x, case.region.centre_y),
            (bbox[2] - bbox[0]) / 2,
        )
        rows.append(
            {
                "case_id": case.case_id,
                "split": case.split,
                "label": case.label,
                "inside_mean_abs": inside,
                "outside_mean_abs": outside,
                "cells_inside": cells,
                "inside_wins": bool(inside > outside),
            }
        )
    valid = [r for r in rows if np.isfinite(r["inside_mean_abs"])]
    ratios = [r["inside_mean_abs"] / r["outside_mean_abs"] for r in valid if r["outside_mean_abs"]]
    return {
        "checkpoint": str(checkpoint),
        "model": manifest.identity,
        "training_status": manifest.training.get("status"),
        "training_config": manifest.training.get("config"),
        "best_val_auc": manifest.training.get("best_val_auc"),
        "cases": len(rows),
        "cases_compared": len(valid),
        "fraction_inside_wins": round(sum(r["inside_wins"] for r in valid) / len(valid), 4),
        "median_inside_over_outside": round(float(np.median(ratios)), 3),
        "by_split": {
            split: round(
                sum(r["inside_wins"] for r in valid if r["split"] == split)
                / max(1, sum(r["split"] == split for r in valid)),
                4,
            )
            for split in sorted({r["split"] for r in valid})
        },
        "rows": rows,
    }


def run(cohort: Path, checkpoints: dict[str, Path], grid: int, splits: list[str]) -> dict[str, Any]:
    """Measure every checkpoint on the cohort's ``splits``."""
    manifest = cohort / "manifest.csv" if cohort.is_dir() else cohort
    cases = [c for c in read_cohort(manifest) if c.split in splits]
    if not cases:
        raise ValueError(f"The cohort {manifest} has no cases in the splits {', '.join(splits)}")
    return {
        "benchmark": "explain-evidence",
        "machine": describe_machine(),
        "cohort": str(manifest),
        "splits": splits,
        "grid": grid,
        "criterion": "mean |importance| of cells whose centre lies in the lesion disc > mean "
        "over the other cells",
        "models": {label: measure(path, cases, grid) for label, path in checkpoints.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aln bench explain-evidence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--cohort", type=Path, required=True, help="synthetic cohort folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained checkpoint")
    parser.add_argument(
        "--untrained", type=Path, help="an untrained checkpoint (default: a seeded demo)"
    )
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID)
    parser.add_argument("--splits", default="test", help="comma-separated splits")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    grid = check_grid(args.grid)
    with tempfile.TemporaryDirectory(prefix="aln-untrained-") as scratch:
        untrained = args.untrained
        if untrained is None:
            from aln.model.checkpoint import new_demo_checkpoint
            from aln.preprocessing.manifest import read_manifest

            untrained = Path(scratch) / "untrained"
            new_demo_checkpoint(untrained, read_manifest(args.checkpoint).backbone, seed=0)
        report = run(
            args.cohort,
            {"trained": args.checkpoint, "untrained": untrained},
            grid,
            args.splits.split(","),
        )
    out = write_result(report, "explain_evidence", args.out)
    for label, model in report["models"].items():
        print(
            f"{label}: inside wins in {model['fraction_inside_wins']:.1%} of "
            f"{model['cases_compared']} cases; median inside/outside "
            f"{model['median_inside_over_outside']}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
