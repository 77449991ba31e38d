"""Latency of one request and throughput at a fixed concurrency through the served ensemble.

Run: ``python benchmarks/served_latency.py [--concurrency 4] [--requests 60]``. Builds the demo
repository (Swin V2 tiny, seeded demo weights), starts the embedded tritonserver on free ports,
warms up, then measures (1) sequential single-request latency and (2) throughput with
``--concurrency`` requests in flight through the asyncio client, on one synthetic 12-bit Hologic
study (uncompressed and JPEG 2000). Writes ``benchmarks/results/served-<machine>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine, machine_slug

from aln.client import AlnClient, AsyncAlnClient, ImageInput
from aln.export.repository import build_repository
from aln.model.checkpoint import new_demo_checkpoint
from aln.preprocessing import contract
from aln.preprocessing.synth import synth_case
from aln.server import EmbeddedServer, ServerConfig, free_port


async def _throughput(
    url: str, image: ImageInput, clinical: dict, concurrency: int, requests: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with AsyncAlnClient(url, timeout_s=120) as client:

        async def one() -> None:
            async with gate:
                start = time.perf_counter()
                await client.predict(image, clinical)
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return requests / (time.perf_counter() - start), latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    machine = describe_machine()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        new_demo_checkpoint(work / "ckpt", "swinv2_tiny_window8_256")
        repo, spec = build_repository(work / "ckpt", work / "repo")
        config = ServerConfig(
            repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port()
        )
        with EmbeddedServer(config, log=work / "server.log") as server:
            server.wait_until_ready(contract.ENSEMBLE)
            url = f"127.0.0.1:{config.grpc_port}"
            for syntax in ("explicit", "jpeg2000"):
                case = synth_case(
                    np.random.default_rng(1), "hologic", syntax, laterality="L", view="CC"
                )
                image = ImageInput(case.dicom, case.lesion_centre)
                with AlnClient(url, timeout_s=120) as client:
                    for _ in range(3):
                        client.predict(image, case.clinical)
                    single = []
                    for _ in range(args.sequential):
                        start = time.perf_counter()
                        client.predict(image, case.clinical)
                        single.append((time.perf_counter() - start) * 1000)
                throughput, latencies = asyncio.run(
                    _throughput(url, image, case.clinical, args.concurrency, args.requests)
                )
                row = {
                    "transfer_syntax": syntax,
                    "dicom_mb": round(len(case.dicom) / 2**20, 1),
                    "single_request_ms_p50": round(statistics.median(single), 1),
                    "concurrency": args.concurrency,
                    "throughput_studies_s": round(throughput, 2),
                    "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
                    "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "benchmark": "served_latency",
        "machine": machine,
        "repository": spec.__dict__,
        "study": "4096x3328 12-bit Hologic, no auxiliary",
        "results": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"served-{machine_slug(machine)}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {machine['cpu']} ({machine['cores']} cores); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
