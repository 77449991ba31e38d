"""Augmentation that keeps the physical scale honest.

No zoom or crop jitter: a 5 cm crop stays 5 cm. Mirroring top-bottom only (left-right would put
the chest wall on the other side of the normalised crop), rotations of at most 10 degrees about the
lesion centre, and mild gamma and contrast changes of the display values.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage


def augment(
    grey: npt.NDArray[np.float32], rng: np.random.Generator, max_rotation_deg: float = 10.0
) -> npt.NDArray[np.float32]:
    """A random scale-preserving variant of a grey crop.

    Args:
        grey: float32 (S, S) in [0, 1], chest wall on the left.
        rng: Seeded random source.
        max_rotation_deg: Largest rotation.

    Returns:
        float32 (S, S) in [0, 1].
    """
    out = grey
    if rng.random() < 0.5:
        out = out[::-1, :]
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg)
    out = ndimage.rotate(out, angle, reshape=False, order=1, mode="reflect")
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    contrast = rng.uniform(0.9, 1.1)
    out = np.clip(out, 0.0, 1.0) ** gamma
    out = (out - 0.5) * contrast + 0.5
    result: npt.NDArray[np.float32] = np.clip(out, 0.0, 1.0).astype(np.float32)
    return result
