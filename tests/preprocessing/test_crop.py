import math

import numpy as np
import pytest

from aln.preprocessing import contract
from aln.preprocessing.crop import Box, CropSpec, Region, crop_box, normalise, pad_to_box, resize
from aln.preprocessing.errors import (
    ConfigurationError,
    InvalidRequestError,
    PreprocessingError,
    RegionError,
)


@pytest.mark.parametrize(
    ("spacing", "side"), [(0.0941, 531), (0.07 / 1.07, 764), (0.085, 588), (0.05, 1000)]
)
def test_fixed_mm_is_50_mm_at_the_breast(spacing, side):
    box = crop_box(Region(1000, 1200), CropSpec(), spacing)
    assert box.x1 - box.x0 == box.y1 - box.y0 == side
    assert abs((box.x0 + box.x1) / 2 - 1000) <= 0.5 and abs((box.y0 + box.y1) / 2 - 1200) <= 0.5


def test_other_crop_methods():
    region = Region(500, 500, (450, 480, 570, 520))
    assert crop_box(region, CropSpec(method="fixed_px", size_px=300), 0.1).as_tuple() == (
        350,
        350,
        650,
        650,
    )
    bbox = crop_box(region, CropSpec(method="lesion_bbox"), 0.1)
    assert bbox.as_tuple() == (450, 440, 570, 560)
    margin = crop_box(region, CropSpec(method="lesion_bbox_margin", margin_mm=5), 0.1)
    assert margin.x1 - margin.x0 == 120 + 2 * 50
    with pytest.raises(RegionError, match="needs the lesion.s bounding box"):
        crop_box(Region(500, 500), CropSpec(method="lesion_bbox"), 0.1)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (Region(math.nan, 5), "not finite"),
        (Region(5, math.inf), "not finite"),
        (Region(-1, 5), "outside the image"),
        (Region(5, 100), "outside the image"),
        (Region(5, 5, (10, 10, 4, 20)), "inverted or empty"),
        (Region(5, 5, (0, 0, math.nan, 20)), "non-finite"),
        (Region(5, 5, (200, 200, 300, 300)), "lies outside"),
    ],
)
def test_region_validation(region, message):
    with pytest.raises(RegionError, match=message):
        region.validate(rows=100, columns=80)


def test_region_tensor_round_trip():
    region = Region(1.5, 2.5, (0, 1, 3, 4))
    assert Region.from_array(region.to_array()) == region
    assert Region.from_array(Region(1, 2).to_array()).bbox is None
    with pytest.raises(InvalidRequestError, match="'region' has 2 values, it must hold 6"):
        Region.from_array([1, 2])


def test_region_layout_is_packed_and_unpacked_by_the_contract():
    packed = contract.pack_region((10.5, 20.0), (1, 2, 30, 40))
    assert packed.dtype == np.float32 and packed.tolist() == [10.5, 20.0, 1, 2, 30, 40]
    assert contract.unpack_region(packed) == ((10.5, 20.0), (1.0, 2.0, 30.0, 40.0))
    assert contract.unpack_region(contract.pack_region((3, 4))) == ((3.0, 4.0), None)
    with pytest.raises(InvalidRequestError, match="Input 'auxiliary_region' has 7 values"):
        contract.unpack_region(np.zeros(7), "auxiliary_region")


def test_invalid_crop_spec_is_a_configuration_error():
    """A bad crop spec is the deployment's fault, never answered as a bad request."""
    with pytest.raises(ConfigurationError, match="crop method of 'square'") as raised:
        CropSpec(method="square")  # type: ignore[arg-type]
    assert not isinstance(raised.value, PreprocessingError)
    with pytest.raises(ConfigurationError, match="size_mm of '-5"):
        CropSpec(size_mm=-5)
    with pytest.raises(
        ConfigurationError, match="size_px of '4' is invalid, it must be at least 8"
    ):
        CropSpec(size_px=4)


def test_box_methods_without_a_box_name_what_is_missing():
    with pytest.raises(RegionError, match="needs the lesion's bounding box .* has only a centre"):
        crop_box(Region(10, 10), CropSpec(method="lesion_bbox"), 0.1)


def test_padding_places_inside_part_and_reports_it():
    inside = np.ones((6, 6), dtype=np.float32)  # box columns 0..5 and rows 0..5 lie inside
    out, padded = pad_to_box(inside, Box(-2, 0, 6, 8), rows=6, columns=20)
    assert padded and out.shape == (8, 8)
    assert out[:6, 2:].min() == 1 and out[:, :2].max() == 0 and out[6:].max() == 0
    same, padded = pad_to_box(inside, Box(0, 0, 6, 6), rows=6, columns=20)
    assert not padded and same is inside


def test_resize_preserves_constant_and_mean():
    constant = np.full((764, 764), 0.3, dtype=np.float32)
    np.testing.assert_allclose(resize(constant, 256), 0.3, rtol=1e-5)
    rng = np.random.default_rng(0)
    image = rng.random((768, 768)).astype(np.float32)
    out = resize(image, 256)
    assert out.shape == (256, 256)
    assert out.mean() == pytest.approx(image.mean(), abs=1e-3)
    # anti-aliased: a 3x reduction of white noise averages about 9+ pixels
    assert out.std() < image.std() / 2.5


def test_resize_exact_integer_reduction_is_box_like():
    image = np.zeros((512, 512), dtype=np.float32)
    image[:256] = 1.0
    out = resize(image, 256)
    assert out[:120].min() == pytest.approx(1.0) and out[136:].max() == pytest.approx(0.0, abs=1e-6)


def test_normalise_replicates_three_channels():
    out = normalise(np.full((4, 4), 0.5, dtype=np.float32))
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(
        out[:, 0, 0],
        (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
        rtol=1e-6,
    )
