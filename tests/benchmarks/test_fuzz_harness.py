"""The fuzz benchmark's harness: a native crash is caught, counted and the run goes on."""

from __future__ import annotations

import faulthandler
import os
import signal

import numpy as np

from aln.benchmarks.fuzz_preprocessing import (
    codestream_span,
    mutate,
    run_case,
    run_cases,
    seeds,
    structure_points,
)
from aln.preprocessing import Region


def _crash_on_three(data: bytes, region: Region) -> str:
    if data == b"3":
        faulthandler.disable()  # pytest's handler would print a traceback of this on purpose
        os.kill(os.getpid(), signal.SIGSEGV)  # what a native decoder's segfault does
    if data == b"4":
        raise KeyError("not a documented error")
    return "ok"


def test_a_segfault_is_counted_against_its_case_and_the_next_cases_still_run():
    cases = ((i, str(i).encode(), Region(1.0, 1.0)) for i in range(7))
    results = list(run_cases(cases, _crash_on_three))
    assert [r["case"] for r in results] == list(range(7))
    assert results[3] == {"case": 3, "outcome": "NATIVE_CRASH", "signal": "SIGSEGV"}
    assert results[4]["outcome"].startswith("UNDOCUMENTED KeyError")
    assert all(r["outcome"] == "ok" for i, r in enumerate(results) if i not in (3, 4))


def test_every_seed_preprocesses_cleanly_before_mutation():
    """A seed refused unmutated would fuzz nothing past the check that refuses it."""
    assert [run_case(data, region) for data, region in seeds()] == ["ok"] * 5


def test_codestream_mutations_land_inside_the_compressed_fragment():
    rng = np.random.default_rng(0)
    for data, _ in seeds()[1:]:  # every compressed seed
        span = codestream_span(data)
        assert span is not None and span[1] > span[0]
        points = structure_points(data, span)
        assert points and all(span[0] <= p < span[1] for p in points)
        changed_inside = 0
        for _ in range(60):
            mutated = mutate(data, rng, span)
            first = next(
                (i for i, (a, b) in enumerate(zip(data, mutated, strict=False)) if a != b), None
            )
            changed_inside += first is not None and first >= span[0]
        assert changed_inside > 10
