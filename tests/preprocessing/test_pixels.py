import numpy as np
import pytest

from aln.preprocessing.pixels import (
    GreyLevels,
    LutVOI,
    WindowVOI,
    apply_grey_levels,
    apply_lut,
    apply_window,
)


def test_linear_window_matches_ps33_formula():
    values = np.array([0.0, 1499.5, 2000.0, 2500.0, 5000.0])
    out = apply_window(values, WindowVOI(center=2000, width=1001, function="LINEAR"))
    # PS3.3 C.11.2.1.2.1: (x - (c - 0.5)) / (w - 1) + 0.5, clipped
    expected = np.clip((values - 1999.5) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected)
    assert out[0] == 0 and out[-1] == 1


def test_linear_exact_and_sigmoid():
    values = np.array([1000.0, 2000.0, 3000.0])
    exact = apply_window(values, WindowVOI(2000, 2000, "LINEAR_EXACT"))
    np.testing.assert_allclose(exact, [0.0, 0.5, 1.0])
    sigmoid = apply_window(values, WindowVOI(2000, 2000, "SIGMOID"))
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-4 * (values - 2000) / 2000)))
    assert sigmoid[1] == pytest.approx(0.5)


def test_lut_maps_and_clamps_outside_its_range():
    lut = LutVOI(first_mapped=10, table=np.array([0.0, 100.0, 65535.0]), output_bits=16)
    out = apply_lut(np.array([0.0, 10.0, 11.0, 12.0, 99.0]), lut)
    np.testing.assert_allclose(out, [0.0, 0.0, 100 / 65535, 1.0, 1.0])


def test_monochrome1_inverts_against_fixed_top_not_image_maximum():
    stored = np.array([[100, 200], [300, 400]], dtype=np.int32)
    levels = GreyLevels(1.0, 0.0, WindowVOI(2048, 4096, "LINEAR_EXACT"), invert=True)
    out = apply_grey_levels(stored, levels)
    # 1 - x with x from the window, independent of the image's own maximum (400)
    np.testing.assert_allclose(out, 1 - ((stored - 2048) / 4096 + 0.5), rtol=1e-6)
    assert out.dtype == np.float32


def test_rescale_applied_before_voi():
    levels = GreyLevels(2.0, -100.0, WindowVOI(0, 400, "LINEAR_EXACT"), invert=False)
    out = apply_grey_levels(np.array([50, 150], dtype=np.int32), levels)
    np.testing.assert_allclose(out, [0.5, 1.0])
