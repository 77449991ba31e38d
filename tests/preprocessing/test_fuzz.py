"""A short fuzz run in ``make test``: mutated valid DICOMs only ever give a crop or a documented
error, each within 2 s. The 10,000-case run is ``python benchmarks/fuzz_preprocessing.py``."""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aln.benchmarks.fuzz_preprocessing import TIME_LIMIT_S, mutate, run_case, seeds
from aln.preprocessing import Region, preprocess_image
from aln.preprocessing.errors import InvalidDicomError

SEEDS = seeds()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, len(SEEDS) - 1))
def test_mutated_dicom_gives_a_crop_or_a_documented_error(seed, which):
    data, region = SEEDS[which]
    mutated = mutate(data, np.random.default_rng(seed))
    start = time.perf_counter()
    outcome = run_case(mutated, region)  # any undocumented exception fails the test
    assert time.perf_counter() - start < TIME_LIMIT_S
    assert outcome == "ok" or outcome.endswith("Error")


def test_lut_descriptor_with_absurd_output_bits_is_invalid(make_case):
    """Found by the fuzzer: a LUT Descriptor claiming 2000 output bits overflowed a float."""
    case = make_case("ge", "explicit", seed=1)
    ds = pydicom.dcmread(io.BytesIO(case.dicom))
    ds.VOILUTSequence[0].LUTDescriptor = [4096, 0, 2000]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(
        InvalidDicomError,
        match=r"third value of '2000' is invalid, it must be in the range \(8, 16\)",
    ):
        preprocess_image(out.getvalue(), Region(*case.lesion_centre))
