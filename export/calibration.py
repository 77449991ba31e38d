"""Calibration crops for reduced-precision engines, made by the served preprocessing.

An int8 engine is calibrated on what it will see when served: crops made by
:func:`aln.preprocessing.preprocess_image` with the checkpoint's own crop spec, from

* a cohort manifest (the format ``aln train`` reads; label and split may be absent), or a folder
  holding one as ``manifest.csv``: the studies of the site the model will serve;
* nothing: synthetic studies of every vendor profile, which the report says plainly.

Each study gives its primary crop and, where it has one, its auxiliary crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aln.model.errors import ModelError
from aln.preprocessing.errors import PreprocessingError
from aln.preprocessing.manifest import Manifest
from aln.preprocessing.pipeline import preprocess_image

DEFAULT_CROPS = 64


class CalibrationError(ModelError):
    """Calibration input that cannot be used (naming the file, the manifest line and why)."""


@dataclass(frozen=True)
class CalibrationSet:
    """Crops to calibrate on, and where they came from.

    Attributes:
        crops: float32 (N, 3, 256, 256), ImageNet-normalised, as the backbones receive them.
        source: The manifest, or ``"synthetic"``.
        synthetic: Whether the crops are synthetic studies (no site data given).
    """

    crops: npt.NDArray[np.float32]
    source: str
    synthetic: bool

    def describe(self) -> dict[str, object]:
        """What an export report records about its calibration."""
        return {"source": self.source, "synthetic": self.synthetic, "crops": len(self.crops)}


def calibration_set(
    source: Path | None, manifest: Manifest, count: int = DEFAULT_CROPS, seed: int = 0
) -> CalibrationSet:
    """Make up to ``count`` calibration crops with the checkpoint's preprocessing.

    Args:
        source: A cohort manifest or a folder holding ``manifest.csv``; None for synthetic.
        manifest: The checkpoint's manifest (crop spec).
        count: Most crops to make.
        seed: Seed of the synthetic studies.

    Raises:
        CalibrationError: A missing or empty source, or a study that fails preprocessing
            (naming its manifest line and the cause).
    """
    if source is None:
        return CalibrationSet(_synthetic(manifest, count, seed), "synthetic", True)
    from aln.training.cohort import MANIFEST_NAME, read_cohort
    from aln.training.errors import CohortError

    path = Path(source)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise CalibrationError(
            f"The calibration source '{source}' is neither a manifest CSV nor a folder holding "
            f"{MANIFEST_NAME}"
        )
    try:
        cases = read_cohort(path, labelled=False)
    except CohortError as exc:
        raise CalibrationError(f"Calibration manifest {path}: {exc}") from exc
    if not cases:
        raise CalibrationError(f"The calibration manifest {path} lists no studies")
    crops = []
    for line, case in enumerate(cases, start=2):
        images = [(case.primary, case.region, case.options)]
        if case.auxiliary is not None and case.auxiliary_region is not None:
            images.append((case.auxiliary, case.auxiliary_region, case.auxiliary_options))
        for file, region, options in images:
            try:
                result = preprocess_image(file.read_bytes(), region, manifest.crop, options)
            except PreprocessingError as exc:
                raise CalibrationError(
                    f"Calibration manifest {path} line {line} ('{file.name}'): {exc}"
                ) from exc
            crops.append(result.tensor)
        if len(crops) >= count:
            break
    return CalibrationSet(np.stack(crops[:count]).astype(np.float32), str(path), False)


def _synthetic(manifest: Manifest, count: int, seed: int) -> npt.NDArray[np.float32]:
    from aln.preprocessing.crop import Region
    from aln.synthetic import VENDORS
    from aln.synthetic.mammogram import synth_case

    rng = np.random.default_rng(seed)
    crops = []
    vendors = [v for v in VENDORS if v != "film"]  # film needs a caller spacing
    for i in range(count):
        case = synth_case(rng, vendors[i % len(vendors)], "explicit", shape=(1200, 1000))
        centre = case.lesion_centre if i % 2 == 0 else case.auxiliary_centre
        crops.append(preprocess_image(case.dicom, Region(*centre), manifest.crop).tensor)
    return np.stack(crops).astype(np.float32)
