"""Mutation fuzzing of ``aln.preprocessing`` with valid synthetic DICOMs as seeds.

Run: ``aln bench fuzz [--cases 10000] [--seed 0]``. Each case takes a
valid synthetic mammogram (explicit, JPEG 2000, HTJ2K, JPEG-LS and RLE seeds), applies 1-4
random mutations (bit flips, byte overwrites, truncation, insertion, chunk duplication, length
fields set to huge values) and runs the whole preprocessing. Mutations land in the header, anywhere,
or inside the compressed codestream itself (:func:`codestream_span`), half of those on a JPEG 2000
or JPEG-LS marker segment or the RLE segment table, where native decoders parse lengths. The only
acceptable outcomes are a crop or a documented
:class:`~aln.preprocessing.errors.PreprocessingError`; anything else, a case over 2 s, or a peak
resident set over the bound is a finding.

Cases run in a worker process (:func:`run_cases`), so a native crash (a segfault in OpenJPEG,
CharLS, the RLE decoder) is caught, counted as a native crash with its signal and case, and the
run goes on in a fresh worker; the result reports native crashes separately. Writes
``benchmarks/results/fuzz-<machine>.json``. ``tests/preprocessing/test_fuzz.py`` runs a short
version of the same mutations through hypothesis in ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from aln.benchmarks.machine import describe_machine, write_result
from aln.preprocessing import Region, preprocess_image
from aln.preprocessing.errors import PreprocessingError
from aln.synthetic.mammogram import synth_case

SEED_SYNTAXES = ("explicit", "jpeg2000", "htj2k", "jpegls", "rle")
TIME_LIMIT_S = 2.0


def seeds() -> list[tuple[bytes, Region]]:
    """One small valid mammogram per transfer syntax, with its lesion, each preprocessing cleanly.

    A seed that is refused unmutated (a lesion the small field cut off) would test nothing past
    the region check, its decoder least of all: such draws are skipped.
    """
    out = []
    for i, syntax in enumerate(SEED_SYNTAXES):
        for attempt in range(50):
            rng = np.random.default_rng([i, attempt])
            case = synth_case(rng, "ge", syntax, shape=(320, 256))
            region = Region(*case.lesion_centre)
            if run_case(case.dicom, region) == "ok":
                out.append((case.dicom, region))
                break
        else:
            raise RuntimeError(f"no valid {syntax} seed in 50 draws")
    return out


def codestream_span(data: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the first compressed fragment in ``data``; None when uncompressed."""
    import io

    ds = pydicom.dcmread(io.BytesIO(data))
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    pixel = ds.PixelData
    offset = data.rfind(pixel[:64])
    # skip the Basic Offset Table item and the first fragment's item header (tag + length)
    first = pixel.find(b"\xfe\xff\x00\xe0", 8)
    if offset < 0 or first < 0:
        return None
    length = int.from_bytes(pixel[first + 4 : first + 8], "little")
    start = offset + first + 8
    return start, min(start + length, len(data))


def structure_points(data: bytes, span: tuple[int, int]) -> list[int]:
    """Offsets where a codestream's decoders read lengths.

    JPEG 2000 and JPEG-LS streams (they start with an ``FF`` marker): the byte after each
    ``FF xx`` marker, where its segment length lies. RLE: the 64-byte header (segment count, then
    the offsets of the segments).
    """
    start, end = span
    stream = data[start:end]
    if not stream.startswith(b"\xff"):
        return list(range(start, min(start + 64, end)))
    return [start + i + 2 for i in range(len(stream) - 3) if stream[i : i + 2] >= b"\xff\x4f"]


def mutate(
    data: bytes, rng: np.random.Generator, codestream: tuple[int, int] | None = None
) -> bytes:
    """Apply 1-4 random mutations: in the header, anywhere, or inside the codestream.

    Args:
        data: A valid DICOM.
        rng: Random source.
        codestream: The compressed fragment (:func:`codestream_span`); None when uncompressed.
    """
    buffer = bytearray(data)
    points = structure_points(data, codestream) if codestream else []
    for _ in range(int(rng.integers(1, 5))):
        if not buffer:
            break
        where = rng.random()
        if codestream is not None and where < 1 / 3 and codestream[0] < len(buffer):
            # a third inside the codestream, half of those on its structure
            if points and rng.random() < 0.5:
                at = min(int(rng.choice(points)), len(buffer) - 1)
            else:
                at = int(rng.integers(codestream[0], min(codestream[1], len(buffer))))
        else:
            # the rest: half in the first 2 KiB, where the header lives, half anywhere
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


Runner = Callable[[bytes, Region], str]


def _worker(connection: Connection, runner: Runner) -> None:
    """Run the cases sent over ``connection``; announce each before it runs."""
    while True:
        job = connection.recv()
        if job is None:
            return
        index, data, region = job
        connection.send(("start", index))
        began = time.perf_counter()
        try:
            outcome = runner(data, region)
        except Exception as exc:  # an undocumented error class: a finding, reported
            outcome = f"UNDOCUMENTED {type(exc).__name__}: {exc}"[:300]
        connection.send(("done", index, outcome, time.perf_counter() - began))


def run_cases(
    cases: Iterator[tuple[int, bytes, Region]], runner: Runner = run_case
) -> Iterator[dict[str, Any]]:
    """Run ``(index, dicom, region)`` cases in a worker process, one at a time.

    Yields ``{"case", "outcome", "seconds"}`` per case; a case that kills the worker (a native
    crash) yields ``{"case", "outcome": "NATIVE_CRASH", "signal"}`` and a fresh worker takes the
    next case.
    """
    context = multiprocessing.get_context("fork")
    worker: Any = None
    connection: Connection | None = None

    def start() -> tuple[Any, Connection]:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(child, runner), daemon=True)
        process.start()
        child.close()
        return process, parent

    try:
        for index, data, region in cases:
            if worker is None or not worker.is_alive():
                worker, connection = start()
            assert connection is not None
            connection.send((index, data, region))
            try:
                message = connection.recv()  # "start"
                message = connection.recv()  # "done"
            except EOFError:
                worker.join()
                code = worker.exitcode or 0
                name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                yield {"case": index, "outcome": "NATIVE_CRASH", "signal": name}
                worker = None
                continue
            _, _, outcome, seconds = message
            yield {"case": index, "outcome": outcome, "seconds": seconds}
    finally:
        if worker is not None and worker.is_alive() and connection is not None:
            connection.send(None)
            worker.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rss-mb", type=float, default=2048)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    pool = [(data, region, codestream_span(data)) for data, region in seeds()]
    outcomes: collections.Counter[str] = collections.Counter()
    findings = []
    native_crashes = []
    times = []
    start = time.perf_counter()

    def cases() -> Iterator[tuple[int, bytes, Region]]:
        for i in range(args.cases):
            data, region, span = pool[i % len(pool)]
            yield i, mutate(data, rng, span), region

    for result in run_cases(cases()):
        i, outcome = result["case"], result["outcome"]
        syntax = SEED_SYNTAXES[i % len(SEED_SYNTAXES)]
        if outcome == "NATIVE_CRASH":
            outcomes["NATIVE_CRASH"] += 1
            native_crashes.append({"case": i, "seed_syntax": syntax, "signal": result["signal"]})
            continue
        if outcome.startswith("UNDOCUMENTED"):
            outcomes["UNDOCUMENTED"] += 1
            findings.append({"case": i, "seed_syntax": syntax, "error": outcome})
        else:
            outcomes[outcome] += 1
        times.append(result["seconds"])
        if result["seconds"] > TIME_LIMIT_S:
            findings.append({"case": i, "error": f"took {result['seconds']:.2f} s"})
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} cases, {dict(outcomes)}", flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if peak_rss_mb > args.max_rss_mb:
        findings.append({"case": None, "error": f"peak RSS {peak_rss_mb:.0f} MB"})
    machine = describe_machine()
    report = {
        "benchmark": "fuzz_preprocessing",
        "cases": args.cases,
        "seed": args.seed,
        "seed_syntaxes": SEED_SYNTAXES,
        "outcomes": dict(outcomes),
        "native_crashes": native_crashes,
        "findings": findings,
        "max_case_s": round(max(times), 3),
        "p99_case_ms": round(float(np.percentile(times, 99)) * 1000, 1),
        "peak_rss_mb": round(peak_rss_mb),
        "total_s": round(time.perf_counter() - start, 1),
        "machine": machine,
    }
    write_result(report, "fuzz", args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return 1 if findings or native_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
