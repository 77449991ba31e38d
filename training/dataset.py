"""Model inputs for a cohort, made by the server's own preprocessing and cached on disk.

Each crop is ``aln.preprocessing.preprocess_image(...).grey`` (decode, VOI, orientation, 5 cm
crop, resize) cached under a key that hashes the DICOM bytes, the region, the overrides, the crop
spec and the preprocessing version; augmentation acts on the grey crop and
:func:`aln.preprocessing.crop.normalise` then makes the tensor, exactly as the server does. Without
augmentation a training tensor is bit-identical to the served one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aln.preprocessing import contract
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.contract import ImageOptions
from aln.preprocessing.crop import CropSpec, Region
from aln.preprocessing.pipeline import preprocess_image
from aln.training.cohort import Case


@dataclass(frozen=True)
class CaseInputs:
    """One case ready for the network (before augmentation).

    Attributes:
        primary: float32 (S, S) grey crop in [0, 1].
        auxiliary: float32 (S, S) grey crop, or None.
        clinical: float32 (C,) encoded clinical vector.
        label: 1 or 0.
    """

    primary: npt.NDArray[np.float32]
    auxiliary: npt.NDArray[np.float32] | None
    clinical: npt.NDArray[np.float32]
    label: int


class CropCache:
    """Grey crops on disk, keyed by content.

    Args:
        folder: Cache folder (created on demand).
        spec: The crop spec.
    """

    def __init__(self, folder: Path, spec: CropSpec) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.hits = 0
        self.misses = 0

    def _key(self, data: bytes, region: Region, options: ImageOptions) -> str:
        digest = hashlib.sha256(data)
        digest.update(
            json.dumps(
                [
                    asdict(region),
                    asdict(options),
                    asdict(self.spec),
                    contract.PREPROCESSING_VERSION,
                ],
                sort_keys=True,
            ).encode()
        )
        return digest.hexdigest()

    def crop(self, path: Path, region: Region, options: ImageOptions) -> npt.NDArray[np.float32]:
        """The grey crop of ``region`` on the DICOM at ``path`` (computed once)."""
        data = Path(path).read_bytes()
        file = self.folder / f"{self._key(data, region, options)}.npy"
        if file.is_file():
            self.hits += 1
            cached: npt.NDArray[np.float32] = np.load(file)
            return cached
        self.misses += 1
        grey = preprocess_image(data, region, self.spec, options).grey
        self.folder.mkdir(parents=True, exist_ok=True)
        scratch = file.with_suffix(".tmp.npy")
        np.save(scratch, grey)
        scratch.replace(file)
        return grey


def load_case(case: Case, cache: CropCache, schema: ClinicalSchema, auxiliary: bool) -> CaseInputs:
    """Preprocess (or fetch from the cache) one case.

    Raises:
        PreprocessingError: The case's DICOM, region or clinical record is invalid.
    """
    primary = cache.crop(case.primary, case.region, case.options)
    aux = None
    if auxiliary and case.auxiliary is not None and case.auxiliary_region is not None:
        aux = cache.crop(case.auxiliary, case.auxiliary_region, case.auxiliary_options)
    clinical = schema.encode(case.clinical if schema.fields else {})
    return CaseInputs(primary, aux, clinical, case.label)
