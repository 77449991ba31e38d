r"""One synthetic mammogram with its ground truth: phantom, clinical record, label, vendor encoding.

The image is drawn in the normalised orientation and then stored in the vendor's orientation
(right breasts mirrored, Patient Orientation ``P\L``), so lesion coordinates are stored-pixel
coordinates, as a caller would give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aln.synthetic import Vendor
from aln.synthetic.labels import label_probability, random_clinical
from aln.synthetic.phantom import draw_breast
from aln.synthetic.vendors import PROFILES, build_dataset, encode, to_bytes


@dataclass(frozen=True)
class SynthCase:
    """One synthetic mammogram and its ground truth (all coordinates in stored pixels).

    Attributes:
        dicom: The encoded DICOM object.
        lesion_centre: ``(x, y)``.
        lesion_bbox: ``(x0, y0, x1, y1)``.
        lesion_diameter_mm: Diameter at the breast.
        auxiliary_centre: ``(x, y)`` of the auxiliary region.
        auxiliary_bbox: ``(x0, y0, x1, y1)`` of the auxiliary region.
        spacing_mm: True millimetres per pixel at the breast.
        laterality: ``L`` or ``R``.
        view: ``CC`` or ``MLO``.
        vendor: Vendor profile name.
        transfer_syntax: Transfer syntax name.
        monochrome1: Stored as MONOCHROME1.
        clinical: Clinical record (schema v1).
        label: 1 when nodes stay positive after NAT.
        spiculated: Lesion margin is spiculated.
        density: Lesion contrast over the parenchyma (display units, 0.2-0.5).
        true_probability: The label's probability under :func:`label_probability`.
        extra: Other ground truth.
    """

    dicom: bytes
    lesion_centre: tuple[float, float]
    lesion_bbox: tuple[float, float, float, float]
    lesion_diameter_mm: float
    auxiliary_centre: tuple[float, float]
    auxiliary_bbox: tuple[float, float, float, float]
    spacing_mm: float
    laterality: str
    view: str
    vendor: str
    transfer_syntax: str
    monochrome1: bool
    clinical: dict[str, Any]
    label: int
    spiculated: bool
    density: float
    true_probability: float
    extra: dict[str, Any] = field(default_factory=dict)


def synth_case(
    rng: np.random.Generator,
    vendor: Vendor = "hologic",
    transfer_syntax: str = "explicit",
    *,
    shape: tuple[int, int] | None = None,
    laterality: str | None = None,
    view: str | None = None,
    monochrome1: bool | None = None,
    calibrated: bool | None = None,
    diameter_mm: float | None = None,
) -> SynthCase:
    """Generate one synthetic mammogram with its ground truth.

    Args:
        rng: Random source (seeded by the caller for reproducibility).
        vendor: Vendor profile.
        transfer_syntax: One of :data:`TRANSFER_SYNTAXES`.
        shape: (rows, cols) instead of the vendor's full detector (same spacing: a smaller field).
        laterality: ``L``/``R``; random when None.
        view: ``CC``/``MLO``; random when None.
        monochrome1: Store MONOCHROME1; the vendor's convention when None.
        calibrated: Add a calibrated Pixel Spacing; the vendor's convention when None.
        diameter_mm: Lesion diameter; random 8-45 mm when None.
    """
    profile = PROFILES[vendor]
    shape = shape or profile.shape
    laterality = laterality or str(rng.choice(["L", "R"]))
    view = view or str(rng.choice(["CC", "MLO"]))
    monochrome1 = profile.monochrome1 if monochrome1 is None else monochrome1
    calibrated = profile.calibrated if calibrated is None else calibrated
    diameter = float(diameter_mm if diameter_mm is not None else rng.uniform(8, 45))
    spiculated = bool(rng.random() < 0.4)
    density = float(rng.uniform(0.2, 0.5))
    spacing = profile.spacing_at_breast_mm
    top = (1 << profile.bits_stored) - 1
    normalised, (lx, ly), (rx, ry), breast = draw_breast(
        rng, shape, spacing, view, diameter, spiculated, top, density
    )
    # Auxiliary region: a 30 mm square of parenchyma between the lesion and the chest wall.
    aux_half = 15.0 / spacing
    ax = float(max(lx * 0.45, aux_half * 0.5))
    ay = float(np.clip(ly + rng.uniform(-0.2, 0.2) * shape[0], aux_half, shape[0] - aux_half))
    flip = laterality == "R"
    cols = shape[1]
    stored = normalised[:, ::-1] if flip else normalised
    if flip:
        lx, ax = cols - lx, cols - ax
    clinical = random_clinical(rng, diameter)
    probability = label_probability(diameter, spiculated, density, clinical)
    label = int(rng.random() < probability)
    serial = int(rng.integers(10**6, 10**7))
    patient = {
        "PatientName": f"SYNTH^PATIENT{serial}",
        "PatientID": f"SYN{serial}",
        "PatientBirthDate": f"19{int(rng.integers(40, 99))}0101",
        "AccessionNumber": f"ACC{serial}",
    }
    ds = build_dataset(
        profile,
        np.ascontiguousarray(stored),
        laterality=laterality,
        view=view,
        monochrome1=monochrome1,
        calibrated=calibrated,
        rng=rng,
        patient=patient,
    )
    pixels = np.frombuffer(ds.PixelData, "<u2").reshape(shape)
    ds = encode(ds, transfer_syntax, pixels)
    return SynthCase(
        dicom=to_bytes(ds),
        lesion_centre=(round(lx, 2), round(ly, 2)),
        lesion_bbox=(round(lx - rx, 2), round(ly - ry, 2), round(lx + rx, 2), round(ly + ry, 2)),
        lesion_diameter_mm=round(diameter, 2),
        auxiliary_centre=(round(ax, 2), round(ay, 2)),
        auxiliary_bbox=(
            round(ax - aux_half, 2),
            round(ay - aux_half, 2),
            round(ax + aux_half, 2),
            round(ay + aux_half, 2),
        ),
        spacing_mm=spacing,
        laterality=laterality,
        view=view,
        vendor=vendor,
        transfer_syntax=transfer_syntax,
        monochrome1=monochrome1,
        clinical=clinical,
        label=label,
        spiculated=spiculated,
        density=round(density, 4),
        true_probability=round(probability, 6),
        extra={"patient": patient, "breast_fraction": float(breast.mean())},
    )
