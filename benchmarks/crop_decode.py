"""Decode-to-crop time per transfer syntax: region decode vs full decode, side by side.

Run: ``make bench-crop`` (or ``aln bench crop [--repeats 5]``). Builds one
synthetic 4096 x 3328 12-bit Hologic mammogram per transfer syntax, then times
``preprocess_image`` (header checks, decode, VOI, 50 mm crop, resize, normalise) with
``strategy="region"`` and ``strategy="full"`` interleaved on the same bytes, and checks the two
crops are identical. Writes ``benchmarks/results/crop_decode-<machine>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from aln.benchmarks.machine import describe_machine, write_result
from aln.preprocessing import Region, preprocess_image
from aln.preprocessing.decode import REGION_PATHS
from aln.preprocessing.header import read_header
from aln.synthetic import TRANSFER_SYNTAXES
from aln.synthetic.mammogram import synth_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--syntaxes", default=",".join(TRANSFER_SYNTAXES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    machine = describe_machine()
    rows = []
    for syntax in args.syntaxes.split(","):
        case = synth_case(
            np.random.default_rng(0), "hologic", syntax, laterality="L", view="CC", diameter_mm=20.0
        )
        region = Region(*case.lesion_centre)
        times: dict[str, list[float]] = {"region": [], "full": []}
        results = {}
        for _ in range(args.repeats):
            for strategy in ("region", "full"):
                start = time.perf_counter()
                results[strategy] = preprocess_image(case.dicom, region, strategy=strategy)
                times[strategy].append((time.perf_counter() - start) * 1000)
        identical = bool(np.array_equal(results["region"].grey, results["full"].grey))
        header = read_header(case.dicom)
        # Where the region path is the full path, "identical" holds by construction.
        path = REGION_PATHS.get(header.transfer_syntax_uid, "none: decoded in full")
        region_ms, full_ms = (statistics.median(times[k]) for k in ("region", "full"))
        rows.append(
            {
                "transfer_syntax": syntax,
                "encoded_mb": round(len(case.dicom) / 2**20, 2),
                "region_ms": round(region_ms, 1),
                "full_ms": round(full_ms, 1),
                "speedup": round(full_ms / region_ms, 2),
                "region_path": path,
                "identical": identical,
                "crop_px": results["region"].provenance.crop_box[2]
                - results["region"].provenance.crop_box[0],
            }
        )
        print(
            f"{syntax:>15}: region {region_ms:7.1f} ms  full {full_ms:7.1f} ms  "
            f"x{full_ms / region_ms:5.2f}  identical={identical}",
            flush=True,
        )

    report = {
        "benchmark": "crop_decode",
        "image": "4096x3328 12-bit, Hologic geometry, 50 mm crop",
        "repeats": args.repeats,
        "statistic": "median ms of preprocess_image",
        "machine": machine,
        "results": rows,
    }
    out = write_result(report, "crop_decode", args.out)
    print(f"machine: {machine['cpu']} ({machine['cores']} cores); wrote {out}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
