"""A synthetic breast with a lesion of known size, margin and contrast, drawn as stored values.

The breast is drawn in the normalised orientation (chest wall on the left): an elliptic outline
with a soft skin line, correlated parenchymal texture at two scales, a pectoral muscle on MLO
views, and one mass whose margin is round or spiculated.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float
) -> npt.NDArray[np.float32]:
    """Unit-variance Gaussian-filtered noise with correlation length ``scale_px`` (FFT filter)."""
    small = (max(8, math.ceil(shape[0] / 4)), max(8, math.ceil(shape[1] / 4)))
    white = rng.standard_normal(small).astype(np.float32)
    fy = np.fft.fftfreq(small[0])[:, None]
    fx = np.fft.rfftfreq(small[1])[None, :]
    sigma = max(scale_px / 4, 1.0)
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * (fy**2 + fx**2)).astype(np.float32)
    field_ = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=small).astype(np.float32)
    field_ /= field_.std() + 1e-6
    # Nearest-neighbour upsampling by 4 keeps this cheap on full-size detectors.
    big = np.repeat(np.repeat(field_, 4, axis=0), 4, axis=1)[: shape[0], : shape[1]]
    return np.ascontiguousarray(big)


def draw_breast(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing_mm: float,
    view: str,
    diameter_mm: float,
    spiculated: bool,
    top: int,
    density: float = 0.35,
) -> tuple[npt.NDArray[np.uint16], tuple[float, float], tuple[float, float], npt.NDArray[np.bool_]]:
    """Draw a breast, chest wall on the left, and a lesion; return stored values and the lesion.

    Returns:
        uint16 (rows, cols) MONOCHROME2 values in [0, top], lesion centre (x, y), lesion radii
        (rx, ry) in pixels, and the breast mask.
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy = rows * rng.uniform(0.45, 0.55)
    depth = cols * rng.uniform(0.7, 0.85)
    half = rows * rng.uniform(0.36, 0.44)
    r2 = (xx / depth) ** 2 + ((yy - cy) / half) ** 2
    breast = r2 < 1.0
    # Skin line falls off smoothly; tissue is brighter near the chest wall.
    edge = np.clip((1.0 - r2) * 8.0, 0.0, 1.0)
    tissue = 0.35 + 0.15 * (1 - xx / depth) + 0.10 * _smooth_noise(rng, shape, 4.0 / spacing_mm)
    tissue += 0.04 * _smooth_noise(rng, shape, 0.8 / spacing_mm)
    image = np.clip(tissue, 0.05, 0.95) * edge
    if view == "MLO":
        pectoral = xx < (cols * 0.35) * (1 - yy / (rows * 0.6))
        image = np.where(pectoral & breast, np.maximum(image, 0.62), image)

    radius = diameter_mm / 2 / spacing_mm
    for _ in range(100):
        lx = rng.uniform(0.25, 0.65) * depth
        ly = cy + rng.uniform(-0.5, 0.5) * half
        if (lx / depth) ** 2 + ((ly - cy) / half) ** 2 < 0.6:
            break
    # Keep the whole lesion inside the image, even on a small field of view.
    lx = float(np.clip(lx, radius * 1.2, cols - radius * 1.2))
    ly = float(np.clip(ly, radius * 1.2, rows - radius * 1.2))
    window = int(radius * 3) + 4
    y0, y1 = max(int(ly) - window, 0), min(int(ly) + window, rows)
    x0, x1 = max(int(lx) - window, 0), min(int(lx) + window, cols)
    sy, sx = yy[y0:y1, x0:x1] - ly, xx[y0:y1, x0:x1] - lx
    angle = np.arctan2(sy, sx)
    wobble = 1.0 + (
        0.35 * np.abs(np.sin(7 * angle + rng.uniform(0, 6)))
        if spiculated
        else 0.05 * np.sin(3 * angle)
    )
    distance = np.sqrt(sx**2 + sy**2) / (radius * wobble)
    mass = np.clip(1.2 - distance, 0.0, 1.0) ** 0.5 * density
    image[y0:y1, x0:x1] = np.clip(image[y0:y1, x0:x1] + mass, 0, 1)
    image = image + rng.normal(0, 0.004, shape).astype(np.float32) * breast
    stored = np.clip(image * top * 0.9 + top * 0.02, 0, top).astype(np.uint16)
    return stored, (float(lx), float(ly)), (float(radius), float(radius)), breast
