"""Engine speed in process: torch eager, ONNX Runtime and OpenVINO, fp32 to int8, side by side.

``aln bench engines [--backbones swinv2_tiny_window8_256,...] [--batches 1,8,32]``. For each
backbone: build a seeded demo network, time the ONNX export (graph + full checker), then time one
backbone forward at each batch size, the engines interleaved, medians of ``--repeats``. On a
machine with CUDA it adds torch CUDA in fp32, fp16 and bf16 (autocast). On the CPU it adds the
served engine runtimes of reduced work: ONNX Runtime int8 (QDQ), OpenVINO fp32, bf16 (where the
CPU has native bf16; refused otherwise, and the result says why) and int8 (NNCF), calibrated on
served-preprocessing crops of synthetic studies, with each one's embedding cosine against fp32
ONNX Runtime on those crops (random weights: the export's fidelity gate judges a trained model).
It also measures the
machine's matrix-multiply peak (fp32 GEMM, all threads) and reports each engine's achieved
GFLOP/s, counted with ``torch.utils.flop_counter`` on the backbone, as a fraction of that peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from aln.benchmarks.machine import describe_machine, versions, write_result
from aln.model.backbones import DEFAULT_BACKBONE
from aln.preprocessing import contract
from aln.serving.engine import Engine
from aln.serving.spec import EngineSettings


def median_ms(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def matmul_peak_gflops(device: str = "cpu", size: int = 2048, repeats: int = 5) -> float:
    """Achieved fp32 GEMM GFLOP/s of ``size``² matrices: the machine's practical peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    ms = median_ms(lambda: torch.mm(a, b), repeats, sync)
    return 2 * size**3 / (ms / 1000) / 1e9


def backbone_gflop(module: torch.nn.Module) -> float:
    """Floating-point operations of one image through ``module`` (multiply-add = 2), GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.zeros(1, contract.IMAGE_CHANNELS, contract.IMAGE_SIZE, contract.IMAGE_SIZE)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(image)
    return counter.get_total_flops() / 1e9


def _cuda_engines(
    module: torch.nn.Module, image: npt.NDArray[np.float32]
) -> dict[str, Callable[[], object]]:
    gpu = module.to("cuda")
    tensor = torch.from_numpy(image).to("cuda")
    engines: dict[str, Callable[[], object]] = {}
    for name, dtype in (
        ("cuda_fp32", None),
        ("cuda_fp16", torch.float16),
        ("cuda_bf16", torch.bfloat16),
    ):

        def run(dtype: torch.dtype | None = dtype) -> object:
            with (
                torch.inference_mode(),
                torch.autocast("cuda", dtype=dtype, enabled=dtype is not None),
            ):
                return gpu(tensor)

        engines[name] = run
    return engines


def cpu_engines(
    graph: Path, scratch: Path, crops: npt.NDArray[np.float32], transformer: bool, threads: int
) -> tuple[dict[str, Engine], dict[str, str]]:
    """The served engine runtimes for one backbone graph, each precision the CPU can run.

    Returns:
        Engines by name (``onnxruntime_int8``, ``openvino_fp32``, ...), and the ones refused on
        this CPU with the reason (bf16 without native bf16).
    """
    from aln.export.quantize import INT8_SUFFIX, onnx_int8, openvino_ir
    from aln.serving.cpu import UnsupportedPrecisionError, check_precision
    from aln.serving.engine import OnnxEngine
    from aln.serving.openvino import OpenVinoEngine

    engines: dict[str, Engine] = {}
    refused: dict[str, str] = {}
    int8 = onnx_int8(graph, scratch / (graph.stem + INT8_SUFFIX), crops)
    engines["onnxruntime_int8"] = OnnxEngine(int8, EngineSettings(threads=threads))
    fp32_ir = openvino_ir(graph, scratch / "fp32.xml", "fp32")
    int8_ir = openvino_ir(graph, scratch / "int8.xml", "int8", crops, transformer)
    for precision, ir in (("fp32", fp32_ir), ("bf16", fp32_ir), ("int8", int8_ir)):
        try:
            check_precision(precision)
        except UnsupportedPrecisionError as exc:
            refused[f"openvino_{precision}"] = str(exc)
            continue
        engines[f"openvino_{precision}"] = OpenVinoEngine(
            ir, EngineSettings(threads=threads, precision=precision)
        )
    return engines, refused


def run(
    backbones: list[str],
    batches: list[int],
    repeats: int = 3,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every backbone at every batch size; return the result document."""
    from aln.export.onnx_export import export_onnx
    from aln.export.parity import ort_session
    from aln.model.network import AlnNet

    machine = describe_machine()
    threads = machine["cores"]
    torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    peak = {"cpu_fp32_gflops": round(matmul_peak_gflops("cpu"), 1)}
    if cuda:
        peak["cuda_fp32_gflops"] = round(matmul_peak_gflops("cuda", 8192), 1)
    rows = []
    refusals: dict[str, str] = {}
    for name in backbones:
        torch.manual_seed(0)
        net = AlnNet(name, 40).eval()
        gflop = backbone_gflop(net.backbone_primary)
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            graphs = export_onnx(net, Path(scratch))
            export_s = time.perf_counter() - start
            session = ort_session(graphs[0].path, threads)
            crops = calibration_crops(name, Path(scratch) / "checkpoint")
            reduced, refused = cpu_engines(
                graphs[0].path, Path(scratch), crops, name.startswith("swin"), threads
            )
            refusals.update(refused)
            for batch in batches:
                image = (
                    np.random.default_rng(0)
                    .standard_normal((batch, 3, contract.IMAGE_SIZE, contract.IMAGE_SIZE))
                    .astype(np.float32)
                )
                tensor = torch.from_numpy(image)

                def eager(
                    module: torch.nn.Module = net.backbone_primary, x: torch.Tensor = tensor
                ) -> object:
                    with torch.inference_mode():
                        return module(x)

                def onnxruntime(
                    session: Any = session, x: npt.NDArray[np.float32] = image
                ) -> object:
                    return session.run(None, {contract.BACKBONE_INPUT.name: x})

                engines: dict[str, Callable[[], object]] = {
                    "torch_eager": eager,
                    "onnxruntime": onnxruntime,
                }
                for key, engine in reduced.items():

                    def served(e: Engine = engine, x: npt.NDArray[np.float32] = image) -> object:
                        return e.infer({contract.BACKBONE_INPUT.name: x})

                    engines[key] = served
                timings = {key: median_ms(fn, repeats) for key, fn in engines.items()}
                agreement = _agreement(session, reduced, crops[: min(len(crops), 16)])
                if cuda:
                    for key, fn in _cuda_engines(net.backbone_primary, image).items():
                        timings[key] = median_ms(fn, repeats, torch.cuda.synchronize)
                    net.backbone_primary.to("cpu")
                row: dict[str, Any] = {
                    "backbone": name,
                    "batch": batch,
                    "export_s": round(export_s, 2),
                    "gflop_per_image": round(gflop, 2),
                    "embedding_cosine_min": agreement,
                }
                for key, ms in timings.items():
                    img_s = batch * 1000 / ms
                    row[f"{key}_ms"] = round(ms, 1)
                    row[f"{key}_img_s"] = round(img_s, 2)
                    device_peak = peak[
                        "cuda_fp32_gflops" if key.startswith("cuda") else "cpu_fp32_gflops"
                    ]
                    row[f"{key}_gflops"] = round(img_s * gflop, 1)
                    row[f"{key}_fraction_of_peak"] = round(img_s * gflop / device_peak, 3)
                rows.append(row)
                if log is not None:
                    log(
                        f"{name} batch {batch:>2}: "
                        + ", ".join(f"{k} {row[f'{k}_img_s']:.2f} img/s" for k in timings)
                        + f" ({gflop:.1f} GFLOP/img, export {export_s:.1f} s)"
                    )
    return {
        "benchmark": "engines",
        "threads": threads,
        "statistic": f"median of {repeats}",
        "machine": machine,
        "versions": versions(),
        "matmul_peak": peak,
        "refused": refusals,
        "results": rows,
    }


def calibration_crops(backbone: str, folder: Path, count: int = 32) -> npt.NDArray[np.float32]:
    """Served-preprocessing crops of synthetic studies to calibrate the int8 engines on."""
    from aln.export.calibration import calibration_set
    from aln.model.checkpoint import new_demo_checkpoint

    manifest = new_demo_checkpoint(folder, backbone, 0)
    return calibration_set(None, manifest, count=count).crops


def _agreement(
    session: Any, engines: dict[str, Engine], crops: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Each engine's smallest embedding cosine against fp32 ONNX Runtime on served crops.

    On random demo weights: the fidelity gate judges reduced precision on a trained model.
    """
    from aln.export.fidelity import cosine

    name = contract.BACKBONE_INPUT.name
    reference = session.run(None, {name: crops})[0]
    agreement = {}
    for key, engine in engines.items():
        got = engine.infer({name: crops})[contract.BACKBONE_OUTPUT.name]
        agreement[key] = round(float(cosine(got, reference).min()), 6)
    return agreement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aln bench engines", description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=DEFAULT_BACKBONE)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(
        args.backbones.split(","), [int(b) for b in args.batches.split(",")], args.repeats, print
    )
    out = write_result(report, "engines", args.out)
    machine = report["machine"]
    print(
        f"machine: {machine['cpu']} ({machine['cores']} cores), GPU {machine['gpu']}; "
        f"fp32 GEMM peak {report['matmul_peak']}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
