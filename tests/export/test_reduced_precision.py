"""Reduced-precision CPU engines: export, the fidelity gate on a trained model, refusals.

The model is the session's checkpoint trained on the synthetic cohort (``tests/trained.py``);
calibration and held-out studies come from that cohort, 256 held-out crops as the command
defaults to; the int8 ONNX export is the session's ``onnx_int8`` fixture, which the served test
uses too. That model's frozen, randomly initialised EfficientNet gives embeddings of about 1e-5
(timm's initialisation in eval mode), so its answers come from the clinical record and its
probabilities span about 0.1: OpenVINO int8 shifts them by 0.006, which swaps enough pairs of
studies to miss the AUC bound by 0.0002. The OpenVINO int8 gate is therefore shown on the trained
Swin V2 of the benchmarks (``aln bench fidelity``); here the int8 IR is checked for what NNCF
wrote and the fp32 IR against ONNX Runtime.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from aln.cli import EXIT_BAD_INPUT, main
from aln.export import fidelity
from aln.export.calibration import CalibrationError, calibration_set
from aln.export.fidelity import FidelityError
from aln.export.pipeline import REPORT_FILE, engine_paths, export_checkpoint
from aln.model.errors import ModelError
from aln.preprocessing.manifest import read_manifest
from aln.serving.cpu import CpuCapabilities, UnsupportedPrecisionError, check_precision
from aln.serving.engine import OnnxEngine, load_engine
from aln.serving.errors import EngineLoadError
from aln.serving.openvino import OpenVinoEngine
from aln.serving.spec import EngineSettings
from tests.trained import HELD_OUT

ZEN3 = CpuCapabilities(("avx2", "fma"))
SAPPHIRE_RAPIDS = CpuCapabilities(
    ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
)


@pytest.fixture(scope="module")
def chosen(trained, cohort):
    """The calibration crops and held-out studies ``aln export`` takes from the cohort."""
    return calibration_set(cohort, read_manifest(trained[0]), held_out=HELD_OUT)


def test_held_out_studies_are_never_calibrated_on(chosen, cohort):
    assert len(chosen.crops) == 64 and chosen.held_out_crops >= HELD_OUT
    # calibration takes the first studies of the training split in manifest order; every
    # validation and test study, and every later one, is held out
    rows = list(csv.DictReader((cohort / "manifest.csv").open()))
    held_out_lines = {int(s.name.split("line ")[1].rstrip(")")) for s in chosen.held_out}
    calibrated = [
        line
        for line, row in enumerate(rows, start=2)
        if line not in held_out_lines and line < max(held_out_lines)
    ]
    assert len(calibrated) == 32 and all(rows[line - 2]["split"] == "train" for line in calibrated)
    assert {s.split for s in chosen.held_out} >= {"train", "val", "test"}
    assert all(s.label is not None for s in chosen.held_out)


def test_onnx_int8_passes_the_gate_and_records_it(onnx_int8):
    import onnx

    report = json.loads((onnx_int8 / REPORT_FILE).read_text())
    gate = report["fidelity"]
    assert report["format"] == "onnx" and report["precision"] == "int8"
    assert gate["passed"] and gate["crops"] >= HELD_OUT and not gate["failures"]
    assert gate["probability_max_abs_diff"] <= fidelity.PROBABILITY_MAX_ABS
    assert gate["probability_mean_abs_diff"] <= fidelity.PROBABILITY_MEAN_ABS
    assert gate["auc_studies"] > 30 and gate["auc_difference"] <= fidelity.AUC_DIFFERENCE
    assert report["calibration"]["synthetic"] is False and report["calibration"]["crops"] == 64
    assert report["cpu"] == CpuCapabilities.detect().describe()
    engines = engine_paths(onnx_int8)
    assert engines["backbone_primary"].name == "backbone_primary.int8.onnx"
    assert engines["fusion_head"].name == "fusion_head.onnx"  # the head stays fp32
    ops = {n.op_type for n in onnx.load(engines["backbone_primary"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (onnx_int8 / "backbone_primary.onnx").is_file()  # the fp32 reference stays


def test_openvino_ir_matches_fp32_and_int8_ir_is_quantised(onnx_int8, trained, cohort, tmp_path):
    from aln.export.quantize import openvino_ir

    report = export_checkpoint(trained[0], tmp_path / "export", "openvino", "fp32")
    assert "fidelity" not in report and report["calibration"] is None  # fp32: parity only
    engines = engine_paths(tmp_path / "export")
    assert all(p.suffix == ".xml" and p.with_suffix(".bin").is_file() for p in engines.values())
    crops = calibration_set(cohort, read_manifest(trained[0]), count=8).crops
    fp32 = _fp32(onnx_int8)["backbone_primary"]
    expected = OnnxEngine(fp32).run({"image": crops})["embedding"]
    got = OpenVinoEngine(engines["backbone_primary"]).run({"image": crops})["embedding"]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-3)
    int8 = openvino_ir(fp32, tmp_path / "int8.xml", "int8", crops, transformer=False)
    assert "FakeQuantize" in int8.read_text()
    assert "FakeQuantize" not in engines["backbone_primary"].read_text()


def test_a_missed_bound_writes_nothing_and_names_bound_value_and_studies(
    trained, cohort, tmp_path, monkeypatch
):
    monkeypatch.setattr(fidelity, "PROBABILITY_MAX_ABS", 0.0)
    out = tmp_path / "export"
    with pytest.raises(FidelityError) as missed:  # 32 held-out crops: enough to miss a zero bound
        export_checkpoint(trained[0], out, "onnx", "int8", calibration=cohort, held_out=32)
    message = str(missed.value)
    assert "probability max abs difference" in message and "> 0.0" in message
    assert "(worst: case" in message and "line " in message and "Nothing was written" in message
    assert not out.exists()


def test_the_gate_fails_a_broken_engine(onnx_int8, trained, chosen):
    """An engine that answers the wrong thing fails the gate; identical engines pass exactly."""
    manifest = read_manifest(trained[0])
    held_out = chosen.held_out
    reference = {m: OnnxEngine(p) for m, p in _fp32(onnx_int8).items()}

    class Noisy(OnnxEngine):
        def infer(self, feeds):
            out = super().infer(feeds)
            rng = np.random.default_rng(0)
            return {k: v + rng.standard_normal(v.shape).astype(v.dtype) for k, v in out.items()}

    candidate = dict(reference, backbone_primary=Noisy(_fp32(onnx_int8)["backbone_primary"]))
    report = fidelity.check_fidelity(reference, candidate, held_out, manifest.auxiliary)
    assert not report.passed and report.embedding_cosine_min["backbone_primary"] < 0.99
    same = fidelity.check_fidelity(reference, reference, held_out, manifest.auxiliary)
    assert same.passed and same.probability_max_abs_diff == 0.0 and same.spearman == 1.0


def _fp32(export):
    from aln.export.pipeline import graph_paths

    return graph_paths(export)


def test_bf16_is_refused_without_native_bf16_unless_forced():
    with pytest.raises(UnsupportedPrecisionError, match="needs native bf16.*has avx2, fma"):
        check_precision("bf16", ZEN3)
    check_precision("bf16", ZEN3, force=True)
    check_precision("bf16", SAPPHIRE_RAPIDS)
    check_precision("int8", ZEN3)  # int8 runs everywhere (slower without VNNI)
    assert SAPPHIRE_RAPIDS.describe() == {
        "avx2": True,
        "avx512": True,
        "vnni": True,
        "avx512_bf16": True,
        "amx": True,
    }
    assert ZEN3.describe()["vnni"] is False and ZEN3.describe()["avx512_bf16"] is False


@pytest.mark.skipif(CpuCapabilities.detect().native_bf16, reason="this CPU has native bf16")
def test_bf16_export_and_engine_are_refused_on_this_cpu(trained, tmp_path):
    with pytest.raises(ModelError, match="needs native bf16"):
        export_checkpoint(trained[0], tmp_path / "out", "openvino", "bf16")
    assert not (tmp_path / "out").exists()
    folder = _fusion_ir(trained, tmp_path)
    with pytest.raises(EngineLoadError, match=r"model.xml' is refused: .*needs native bf16"):
        load_engine(folder, EngineSettings(precision="bf16"))
    forced = load_engine(folder, EngineSettings(precision="bf16", force_precision=True))
    assert isinstance(forced, OpenVinoEngine)


def test_an_ir_without_its_weights_is_refused_naming_both_files(trained, tmp_path):
    xml = _fusion_ir(trained, tmp_path) / "model.xml"
    xml.with_suffix(".bin").unlink()
    with pytest.raises(EngineLoadError, match="needs both model.xml and model.bin"):
        OpenVinoEngine(xml)


def _fusion_ir(trained, tmp_path):
    """A model version folder holding the trained fusion head as OpenVINO IR."""
    from aln.export.onnx_export import export_onnx
    from aln.export.quantize import openvino_ir
    from aln.model.checkpoint import load_checkpoint

    net, _ = load_checkpoint(trained[0])
    (tmp_path / "graphs").mkdir()
    graphs = {g.model: g.path for g in export_onnx(net, tmp_path / "graphs")}
    folder = tmp_path / "1"
    folder.mkdir()
    openvino_ir(graphs["fusion_head"], folder / "model.xml", "fp32")
    return folder


def test_bad_calibration_input_is_refused_by_the_command(trained, cohort, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["export", str(trained[0]), "--format", "onnx", "--precision", "int8"]
    assert main([*args, "--out", str(tmp_path / "a"), "--calibration", str(empty)]) == (
        EXIT_BAD_INPUT
    )
    assert "neither a manifest CSV nor a folder holding manifest.csv" in capsys.readouterr().err
    rows = (cohort / "manifest.csv").read_text().splitlines()
    (cohort / "calibration-notes.dcm").write_bytes(b"not a dicom at all" * 20)
    bad = cohort / "calibration-bad.csv"  # beside the cohort's files, which rows name relatively
    bad.write_text(
        "\n".join([rows[0], rows[1].replace(rows[1].split(",")[0], "calibration-notes.dcm", 1)])
    )
    assert main([*args, "--out", str(tmp_path / "b"), "--calibration", str(bad)]) == (
        EXIT_BAD_INPUT
    )
    err = capsys.readouterr().err
    assert "calibration-bad.csv line 2 ('calibration-notes.dcm')" in err and "DICOM" in err
    few = cohort / "calibration-few.csv"
    few.write_text("\n".join(rows[:5]) + "\n")
    with pytest.raises(
        CalibrationError,
        match=r"gives \d held-out crops after \d calibration crops, and the fidelity gate needs at least 256",
    ):
        export_checkpoint(trained[0], tmp_path / "c", "onnx", "int8", calibration=few)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
