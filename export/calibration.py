"""Calibration crops for reduced-precision engines, made by the served preprocessing.

An int8 engine is calibrated on what it will see when served: crops made by
:func:`aln.preprocessing.preprocess_image` with the checkpoint's own crop spec, from

* a cohort manifest (the format ``aln train`` reads; label and split may be absent), or a folder
  holding one as ``manifest.csv``: the studies of the site the model will serve;
* nothing: synthetic studies of every vendor profile, which the report says plainly.

Each study gives its primary crop and, where it has one, its auxiliary crop. The same source gives
the studies the fidelity gate of reduced-precision engines holds out (:mod:`aln.export.fidelity`),
never one it was calibrated on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aln.model.errors import ModelError
from aln.preprocessing.manifest import Manifest
from aln.training.cohort import EXTERNAL, TEST, TRAIN, UNLABELLED

DEFAULT_CROPS = 64
SYNTHETIC = "synthetic"
"""The source and split of synthetic studies (no site data given)."""
DEFAULT_HELD_OUT = 256
"""Crops of the fidelity gate: at least this many, never the calibration ones."""
CALIBRATION_SPLITS = (TRAIN, UNLABELLED, SYNTHETIC)
"""Splits a study may be calibrated on: training and unlabelled studies (never validation, test
or external ones, which are held out)."""
TEST_SPLITS = (TEST, EXTERNAL)
"""Splits whose AUC the fidelity gate compares (test and external)."""


class CalibrationError(ModelError):
    """Calibration input that cannot be used (naming the file, the manifest line and why)."""


@dataclass(frozen=True)
class HeldOutStudy:
    """A study the fidelity gate scores with both engines (never calibrated on).

    Attributes:
        name: The file (and manifest line), or ``synthetic-N``.
        primary: The primary crop, float32 (3, 256, 256).
        auxiliary: The auxiliary crop, or None.
        clinical: The encoded clinical vector (zeros where the source has no record).
        label: 1 or 0, or None for an unlabelled source.
        split: The cohort split (``synthetic`` for synthetic studies).
    """

    name: str
    primary: npt.NDArray[np.float32]
    auxiliary: npt.NDArray[np.float32] | None
    clinical: npt.NDArray[np.float32]
    label: int | None
    split: str


@dataclass(frozen=True)
class CalibrationSet:
    """Crops to calibrate on, the studies held out for the fidelity gate, and their source.

    Attributes:
        crops: float32 (N, 3, 256, 256), ImageNet-normalised, as the backbones receive them.
        source: The manifest, or ``"synthetic"``.
        synthetic: Whether the crops are synthetic studies (no site data given).
        held_out: Studies never calibrated on (empty unless asked for).
    """

    crops: npt.NDArray[np.float32]
    source: str
    synthetic: bool
    held_out: tuple[HeldOutStudy, ...] = ()

    @property
    def held_out_crops(self) -> int:
        """Crops (primary and auxiliary) of the held-out studies."""
        return sum(1 + (s.auxiliary is not None) for s in self.held_out)

    def describe(self) -> dict[str, object]:
        """What an export report records about its calibration."""
        described: dict[str, object] = {
            "source": self.source,
            "synthetic": self.synthetic,
            "crops": len(self.crops),
        }
        if self.held_out:
            described["held_out_studies"] = len(self.held_out)
            described["held_out_crops"] = self.held_out_crops
        return described


@dataclass
class _Split:
    """Crops and held-out studies as they are assigned, study by study."""

    count: int
    held_out_count: int
    crops: list[npt.NDArray[np.float32]] = field(default_factory=list)
    held_out: list[HeldOutStudy] = field(default_factory=list)
    held_out_crops: int = 0

    def wants_calibration(self, split: str) -> bool:
        return len(self.crops) < self.count and split in CALIBRATION_SPLITS

    @property
    def full(self) -> bool:
        return len(self.crops) >= self.count and self.held_out_crops >= self.held_out_count

    def add(self, study: HeldOutStudy) -> None:
        if self.wants_calibration(study.split):
            self.crops.append(study.primary)
            if study.auxiliary is not None:
                self.crops.append(study.auxiliary)
        elif self.held_out_crops < self.held_out_count:
            self.held_out.append(study)
            self.held_out_crops += 1 + (study.auxiliary is not None)


def calibration_set(
    source: Path | None,
    manifest: Manifest,
    count: int = DEFAULT_CROPS,
    seed: int = 0,
    held_out: int = 0,
) -> CalibrationSet:
    """Make up to ``count`` calibration crops and ``held_out`` held-out crops, served-style.

    Crops are made with the checkpoint's preprocessing.
    Studies are taken in manifest order: one calibrates while calibration needs crops and it is
    not in a validation, test or external split; every other study is held out while the
    fidelity gate needs crops. A study is never in both.

    Args:
        source: A cohort manifest or a folder holding ``manifest.csv``; None for synthetic.
        manifest: The checkpoint's manifest (crop spec, clinical schema).
        count: Most calibration crops to make.
        seed: Seed of the synthetic studies.
        held_out: Crops to hold out for the fidelity gate (0: none).

    Raises:
        CalibrationError: A missing or empty source, a study that fails preprocessing (naming
            its manifest line and the cause), or fewer held-out crops than asked for.
    """
    split = _Split(count, held_out)
    if source is None:
        _synthetic(manifest, split, seed)
        described = SYNTHETIC
    else:
        described = _from_manifest(Path(source), manifest, split)
    if held_out and split.held_out_crops < held_out:
        raise CalibrationError(
            f"The calibration source '{described}' gives {split.held_out_crops} held-out crops "
            f"after {len(split.crops)} calibration crops, and the fidelity gate needs at least "
            f"{held_out}: give a cohort with more studies"
        )
    return CalibrationSet(
        np.stack(split.crops[:count]).astype(np.float32),
        described,
        source is None,
        tuple(split.held_out),
    )


def _from_manifest(source: Path, manifest: Manifest, split: _Split) -> str:
    from aln.preprocessing.errors import ClinicalRecordError, PreprocessingError
    from aln.preprocessing.pipeline import preprocess_image
    from aln.training.cohort import MANIFEST_NAME, read_cohort
    from aln.training.errors import CohortError

    path = source / MANIFEST_NAME if source.is_dir() else source
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
    for line, case in enumerate(cases, start=2):
        where = f"Calibration manifest {path} line {line} ('{case.primary.name}')"
        crops = []
        images = [(case.primary, case.region, case.options)]
        if case.auxiliary is not None and case.auxiliary_region is not None:
            images.append((case.auxiliary, case.auxiliary_region, case.auxiliary_options))
        for file, region, options in images:
            try:
                result = preprocess_image(file.read_bytes(), region, manifest.crop, options)
            except PreprocessingError as exc:
                raise CalibrationError(f"{where}: {exc}") from exc
            crops.append(result.tensor)
        try:
            clinical = (
                manifest.schema.encode(case.clinical)
                if case.clinical
                else np.zeros(manifest.clinical_dim, dtype=np.float32)
            )
        except ClinicalRecordError as exc:
            raise CalibrationError(f"{where}: {exc}") from exc
        labelled = case.split != "unlabelled"
        split.add(
            HeldOutStudy(
                f"{case.primary.name} (line {line})",
                crops[0],
                crops[1] if len(crops) > 1 else None,
                clinical,
                case.label if labelled else None,
                case.split,
            )
        )
        if split.full:
            break
    return str(path)


def _synthetic(manifest: Manifest, split: _Split, seed: int) -> None:
    from aln.preprocessing.crop import Region
    from aln.preprocessing.pipeline import preprocess_image
    from aln.synthetic import VENDORS
    from aln.synthetic.mammogram import synth_case

    rng = np.random.default_rng(seed)
    vendors = [v for v in VENDORS if v != "film"]  # film needs a caller spacing
    i = 0
    while not split.full:
        case = synth_case(rng, vendors[i % len(vendors)], "explicit", shape=(1200, 1000))
        primary = preprocess_image(case.dicom, Region(*case.lesion_centre), manifest.crop).tensor
        auxiliary = preprocess_image(
            case.dicom, Region(*case.auxiliary_centre), manifest.crop
        ).tensor
        split.add(
            HeldOutStudy(
                f"synthetic-{i}",
                primary,
                auxiliary,
                manifest.schema.encode(case.clinical),
                int(case.label),
                SYNTHETIC,
            )
        )
        i += 1
