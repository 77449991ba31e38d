"""Mutation fuzzing of ``aln.preprocessing`` with valid synthetic DICOMs as seeds.

Run: ``aln bench fuzz [--cases 10000] [--seed 0]``. Each case takes a
valid synthetic mammogram (explicit, JPEG 2000, HTJ2K, JPEG-LS and RLE seeds), applies 1-4
random mutations (bit flips, byte overwrites, truncation, insertion, chunk duplication, length
fields set to huge values) and runs the whole preprocessing. The only acceptable outcomes are a
crop or a documented :class:`~aln.preprocessing.errors.PreprocessingError`; anything else, a case
over 2 s, or a peak resident set over the bound is a finding. Writes
``benchmarks/results/fuzz-<machine>.json``. ``tests/preprocessing/test_fuzz.py`` runs a short
version of the same mutations through hypothesis in ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from aln.benchmarks.machine import describe_machine, write_result
from aln.preprocessing import Region, preprocess_image
from aln.preprocessing.errors import PreprocessingError
from aln.synthetic.mammogram import synth_case

SEED_SYNTAXES = ("explicit", "jpeg2000", "htj2k", "jpegls", "rle")
TIME_LIMIT_S = 2.0


def seeds() -> list[tuple[bytes, Region]]:
    """One small valid mammogram per transfer syntax, with its lesion."""
    out = []
    for i, syntax in enumerate(SEED_SYNTAXES):
        case = synth_case(np.random.default_rng(i), "ge", syntax, shape=(320, 256))
        out.append((case.dicom, Region(*case.lesion_centre)))
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Apply 1-4 random mutations (the header is hit more often than the pixels)."""
    buffer = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not buffer:
            break
        # Half of the mutations land in the first 2 KiB, where the header lives.
        limit = len(buffer) if rng.random() < 0.5 else min(len(buffer), 2048)
        at = int(rng.integers(0, limit))
        kind = int(rng.integers(0, 6))
        if kind == 0:
            buffer[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            span = int(rng.integers(1, 16))
            buffer[at : at + span] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
        elif kind == 2:
            del buffer[at:]
        elif kind == 3:
            buffer[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif kind == 4:
            span = int(rng.integers(4, 256))
            buffer[at:at] = buffer[at : at + span]
        else:
            buffer[at : at + 4] = (0xFFFFFFF0).to_bytes(4, "little")  # a lying length field
    return bytes(buffer)


def run_case(data: bytes, region: Region) -> str:
    """``"ok"`` or the name of the documented error class raised (anything else propagates)."""
    try:
        preprocess_image(data, region)
    except PreprocessingError as exc:
        return type(exc).__name__
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rss-mb", type=float, default=2048)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    pool = seeds()
    outcomes: collections.Counter[str] = collections.Counter()
    findings = []
    times = []
    start = time.perf_counter()
    for i in range(args.cases):
        data, region = pool[i % len(pool)]
        mutated = mutate(data, rng)
        began = time.perf_counter()
        try:
            outcomes[run_case(mutated, region)] += 1
        except Exception as exc:  # a finding: an undocumented error class
            outcomes["UNDOCUMENTED"] += 1
            findings.append({"case": i, "error": f"{type(exc).__name__}: {exc}"[:300]})
        elapsed = time.perf_counter() - began
        times.append(elapsed)
        if elapsed > TIME_LIMIT_S:
            findings.append({"case": i, "error": f"took {elapsed:.2f} s"})
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} cases, {dict(outcomes)}", flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if peak_rss_mb > args.max_rss_mb:
        findings.append({"case": None, "error": f"peak RSS {peak_rss_mb:.0f} MB"})
    machine = describe_machine()
    report = {
        "benchmark": "fuzz_preprocessing",
        "cases": args.cases,
        "seed": args.seed,
        "seed_syntaxes": SEED_SYNTAXES,
        "outcomes": dict(outcomes),
        "findings": findings,
        "max_case_s": round(max(times), 3),
        "p99_case_ms": round(float(np.percentile(times, 99)) * 1000, 1),
        "peak_rss_mb": round(peak_rss_mb),
        "total_s": round(time.perf_counter() - start, 1),
        "machine": machine,
    }
    write_result(report, "fuzz", args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
