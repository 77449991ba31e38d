import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from aln.preprocessing.errors import OrientationError, SpacingError
from aln.preprocessing.geometry import resolve_orientation, resolve_spacing


def _ds(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _view(code: str) -> Sequence:
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "SCT"
    return Sequence([item])


@pytest.mark.parametrize(
    ("attrs", "mm", "source"),
    [
        # GE: IPS already at the breast support, ERMF 1
        (
            {
                "ImagerPixelSpacing": [0.0941, 0.0941],
                "EstimatedRadiographicMagnificationFactor": 1.0,
            },
            0.0941,
            "imager_ermf",
        ),
        # Hologic: detector pitch with ERMF 1.07
        (
            {"ImagerPixelSpacing": [0.07, 0.07], "EstimatedRadiographicMagnificationFactor": 1.07},
            0.07 / 1.07,
            "imager_ermf",
        ),
        # PS equal to IPS and no calibration type: not calibrated, IPS/ERMF wins
        (
            {
                "ImagerPixelSpacing": [0.07, 0.07],
                "PixelSpacing": [0.07, 0.07],
                "EstimatedRadiographicMagnificationFactor": 1.07,
            },
            0.07 / 1.07,
            "imager_ermf",
        ),
        # calibrated PS (calibration type present)
        (
            {
                "ImagerPixelSpacing": [0.05, 0.05],
                "PixelSpacing": [0.05, 0.05],
                "PixelSpacingCalibrationType": "GEOMETRY",
            },
            0.05,
            "calibrated",
        ),
        # calibrated PS (differs from IPS)
        ({"ImagerPixelSpacing": [0.07, 0.07], "PixelSpacing": [0.066, 0.066]}, 0.066, "calibrated"),
        # only PS: uncalibrated
        ({"PixelSpacing": [0.085, 0.085]}, 0.085, "uncalibrated"),
        # ERMF outside 1.0-2.0 is ignored
        (
            {"ImagerPixelSpacing": [0.07, 0.07], "EstimatedRadiographicMagnificationFactor": 7.0},
            0.07,
            "imager_ermf",
        ),
    ],
)
def test_spacing_resolution_order(attrs, mm, source):
    spacing = resolve_spacing(_ds(**attrs))
    assert spacing.mm == pytest.approx(mm)
    assert spacing.source == source


def test_caller_spacing_used_only_without_header_spacing():
    assert resolve_spacing(_ds(), 0.05).source == "caller"
    assert resolve_spacing(_ds(ImagerPixelSpacing=[0.07, 0.07]), 0.05).source == "imager_ermf"
    assert resolve_spacing(_ds(ImagerPixelSpacing=[0.07, 0.07]), 0.05, force_caller=True).mm == 0.05


def test_no_spacing_refused():
    with pytest.raises(
        SpacingError,
        match=r"\(0028,0030\) 'Pixel Spacing' and \(0018,1164\) 'Imager Pixel Spacing' are both absent",
    ):
        resolve_spacing(_ds())


@pytest.mark.parametrize("value", [[0.5, 0.5], [0.001, 0.001], [-0.07, -0.07]])
def test_implausible_spacing_refused(value):
    with pytest.raises(SpacingError, match=r"'Imager Pixel Spacing' value of .* is implausible"):
        resolve_spacing(_ds(ImagerPixelSpacing=value))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.05, 0.0, 1.0])
def test_implausible_caller_spacing_refused(value):
    with pytest.raises(SpacingError, match="spacing_mm value"):
        resolve_spacing(_ds(), value)


def test_magnification_view_flagged():
    spacing = resolve_spacing(
        _ds(ImagerPixelSpacing=[0.07, 0.07], EstimatedRadiographicMagnificationFactor=1.8)
    )
    assert spacing.magnification_view and spacing.mm == pytest.approx(0.07 / 1.8)


def test_laterality_and_view_from_tags_and_flip():
    left = resolve_orientation(
        _ds(ImageLaterality="L", ViewCodeSequence=_view("399162004"), PatientOrientation=["A", "R"])
    )
    assert (left.laterality, left.view, left.flip_horizontal) == ("L", "CC", False)
    right = resolve_orientation(
        _ds(Laterality="R", ViewPosition="MLO", PatientOrientation=["P", "FL"])
    )
    assert (right.laterality, right.view, right.flip_horizontal) == ("R", "MLO", True)
    assert right.laterality_source == "Laterality" and right.view_source == "ViewPosition"
    # no Patient Orientation: hanging convention
    assert resolve_orientation(_ds(ImageLaterality="R", ViewPosition="CC")).flip_horizontal


def test_contradictory_laterality_refused_unless_overridden():
    ds = _ds(ImageLaterality="L", Laterality="R", ViewPosition="CC")
    with pytest.raises(
        OrientationError,
        match=r"\(0020,0062\) 'Image Laterality' is 'L' but \(0020,0060\) 'Laterality' is 'R'",
    ):
        resolve_orientation(ds)
    assert resolve_orientation(ds, laterality="R").laterality_source == "caller"


def test_missing_laterality_or_view_refused():
    with pytest.raises(OrientationError, match="No laterality"):
        resolve_orientation(_ds(ViewPosition="CC"))
    with pytest.raises(OrientationError, match="No view"):
        resolve_orientation(_ds(ImageLaterality="L"))
    with pytest.raises(OrientationError, match="override of 'X'"):
        resolve_orientation(_ds(ImageLaterality="L"), view="X")


def test_contradictory_view_refused():
    with pytest.raises(OrientationError, match="Contradictory view"):
        resolve_orientation(
            _ds(ImageLaterality="L", ViewCodeSequence=_view("399162004"), ViewPosition="MLO")
        )
