"""Shared fixtures: synthetic mammograms built in memory, small enough for fast tests."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trained import cohort, onnx_int8, trained  # noqa: F401  (session fixtures for every folder)

SMALL = (900, 760)


@pytest.fixture(scope="session")
def make_case():
    """Build a synthetic case: ``make_case(vendor, transfer_syntax, seed=..., **kwargs)``."""
    from aln.synthetic.mammogram import synth_case

    cache: dict[tuple, object] = {}

    def build(vendor: str = "hologic", transfer_syntax: str = "explicit", seed: int = 0, **kwargs):
        key = (vendor, transfer_syntax, seed, tuple(sorted(kwargs.items())))
        if key not in cache:
            kwargs.setdefault("shape", SMALL)
            cache[key] = synth_case(np.random.default_rng(seed), vendor, transfer_syntax, **kwargs)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def hologic_case(make_case):
    return make_case("hologic", "explicit", seed=1, laterality="L", view="CC", diameter_mm=15.0)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` where no CUDA GPU is visible (they run on GPU machines)."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (and TensorRT where stated)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
