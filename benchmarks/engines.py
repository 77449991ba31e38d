"""Export time and engine speed: torch eager vs ONNX Runtime, side by side in one run.

Run: ``python benchmarks/engines.py [--backbones swinv2_tiny_window8_256,...] [--batches 1,8,32]``.
For each backbone: build a seeded demo network, time the ONNX export (graph + full checker),
then time one backbone forward at each batch size, torch eager and ONNX Runtime interleaved,
medians of ``--repeats``. Writes ``benchmarks/results/engines-<machine>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine, machine_slug

from aln.export.onnx_export import export_onnx
from aln.export.parity import ort_session
from aln.model.network import AlnNet
from aln.preprocessing import contract


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="swinv2_tiny_window8_256")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    machine = describe_machine()
    threads = machine["cores"]
    torch.set_num_threads(threads)
    rows = []
    for name in args.backbones.split(","):
        torch.manual_seed(0)
        net = AlnNet(name, 40).eval()
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            graphs = export_onnx(net, Path(scratch))
            export_s = time.perf_counter() - start
            session = ort_session(graphs[0].path, threads)
            for batch in map(int, args.batches.split(",")):
                image = (
                    np.random.default_rng(0)
                    .standard_normal((batch, 3, contract.IMAGE_SIZE, contract.IMAGE_SIZE))
                    .astype(np.float32)
                )
                tensor = torch.from_numpy(image)

                def eager(module=net.backbone_primary, tensor=tensor):
                    with torch.inference_mode():
                        module(tensor)

                def onnxruntime(session=session, image=image):
                    session.run(None, {contract.BACKBONE_INPUT.name: image})

                eager_ms, ort_ms = (
                    _median_ms(eager, args.repeats),
                    _median_ms(onnxruntime, args.repeats),
                )
                row = {
                    "backbone": name,
                    "batch": batch,
                    "export_s": round(export_s, 2),
                    "torch_eager_ms": round(eager_ms, 1),
                    "onnxruntime_ms": round(ort_ms, 1),
                    "torch_eager_img_s": round(batch * 1000 / eager_ms, 2),
                    "onnxruntime_img_s": round(batch * 1000 / ort_ms, 2),
                }
                rows.append(row)
                print(
                    f"{name} batch {batch:>2}: eager {row['torch_eager_img_s']:6.2f} img/s, "
                    f"onnxruntime {row['onnxruntime_img_s']:6.2f} img/s "
                    f"(export {export_s:.1f} s)",
                    flush=True,
                )
    report = {
        "benchmark": "engines",
        "threads": threads,
        "statistic": f"median of {args.repeats}",
        "machine": machine,
        "torch": torch.__version__,
        "results": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"engines-{machine_slug(machine)}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {machine['cpu']} ({machine['cores']} cores); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
