"""Generate the Triton model repository from typed specs.

``aln_ensemble`` chains ``preprocess`` (Python backend) -> ``backbone_primary`` and
``backbone_auxiliary`` -> ``fusion_head``. Configs are built as Triton ``ModelConfig`` protobuf
messages (the class shipped in tritonclient) and written as ``config.pbtxt`` text, so every file
is valid by construction and parses back in tests.

Two profiles come from one :class:`RepositorySpec`:

* ``embedded`` (default): every model is a Python-backend model, the engines running ONNX
  Runtime; the Triton server bundled in the ``nvidia-pytriton`` wheel (Python backend only) serves
  it, on a laptop or in CI.
* ``production``: engines as ``onnxruntime_onnx`` (CPU or GPU) or ``tensorrt_plan`` (GPU) for the
  NGC Triton container; the ``preprocess`` model is the same Python model.

An ensemble has no batching or queue of its own, so every composing model carries dynamic
batching, a bounded queue with a timeout, instance groups and warm-up.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aln.model.atomic import staged_directory
from aln.preprocessing import contract
from aln.preprocessing.contract import TensorSpec

Profile = Literal["embedded", "production"]
EngineFormat = Literal["onnx", "tensorrt"]
ADAPTER_SOURCE = Path(__file__).resolve().parent.parent / "model_repository"
"""The committed repository: generated configs and the thin ``model.py`` adapters."""
MANIFEST_NAME = "manifest.json"
WARMUP_DIR = "warmup"


@dataclass(frozen=True)
class RepositorySpec:
    """Everything that shapes the generated configs.

    Attributes:
        embedding_dim: Backbone embedding width (from the checkpoint).
        clinical_dim: Clinical vector width (from the checkpoint's schema).
        profile: ``embedded`` or ``production``.
        engine_format: Engines as ONNX or TensorRT plans (production only).
        max_batch: ``max_batch_size`` of the engines (backbones, fusion head).
        preprocess_max_batch: ``max_batch_size`` of ``preprocess`` and of the ensemble (a client
            request carries one study). 1 by default: the preprocess model handles a batch one
            study after another, so batching saves nothing and makes every study wait for its
            batch-mates; under overload a batch of 32 held studies for seconds past the queue
            timeout (docs/reliability.md).
        preprocess_instances: Python processes decoding DICOM in parallel.
        backbone_instances: Instances of each engine (backbones and fusion head). Two
            single-threaded instances by default: on the 2-core CI machine they served 8.8
            studies/s at concurrency 8 against 8.1 for one two-threaded instance (a parallel
            ONNX Runtime run waits for its slowest thread, and preprocessing shares the cores),
            at the cost of single-request latency (p50 216 vs 165 ms); ``aln bench search``
            measures both on other machines (``benchmarks/README.md``).
        max_queue_delay_us: How long the dynamic batcher waits to grow a batch.
        max_queue_size: Requests queued per model beyond which new ones are rejected; 0 (the
            default) sets no size bound and sheds by time only. Triton 2.51 (the embedded
            server) stops answering after sustained rejections over a composing model's
            ``max_queue_size`` (measured in docs/reliability.md), while time-based rejection keeps
            goodput at capacity and recovers; the queue stays bounded by arrival rate x timeout.
        queue_timeout_us: Time a request may wait in a queue before it is rejected.
        engine_threads: ONNX Runtime intra-op threads per backbone instance (embedded); the
            fusion head, a few thousand multiply-adds, always runs on one.
        engine_spinning: Let idle ONNX Runtime threads spin-wait (embedded); off by default, see
            :class:`aln.export.engine.OnnxEngine`.
    """

    embedding_dim: int
    clinical_dim: int
    profile: Profile = "embedded"
    engine_format: EngineFormat = "onnx"
    max_batch: int = 32
    preprocess_max_batch: int = 1
    preprocess_instances: int = 2
    backbone_instances: int = 2
    max_queue_delay_us: int = 2000
    max_queue_size: int = 0
    queue_timeout_us: int = 5_000_000
    engine_threads: int = 1
    engine_spinning: bool = False

    def __post_init__(self) -> None:
        if self.profile not in ("embedded", "production"):
            raise ValueError(
                f"A profile of '{self.profile}' is invalid, it must be embedded or production"
            )
        if self.profile == "embedded" and self.engine_format != "onnx":
            raise ValueError(
                "The embedded profile serves ONNX engines only (its server has no TensorRT backend)"
            )
        for name in (
            "max_batch",
            "preprocess_max_batch",
            "preprocess_instances",
            "backbone_instances",
            "engine_threads",
            "queue_timeout_us",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"A {name} of {getattr(self, name)} is invalid, it must be at least 1"
                )
        if self.max_queue_size < 0:
            raise ValueError(
                f"A max_queue_size of {self.max_queue_size} is invalid, it must be 0 (no size "
                "bound) or more"
            )

    @property
    def widths(self) -> dict[str, int]:
        """Checkpoint-dependent tensor widths for :meth:`TensorSpec.resolve_dims`."""
        return {
            contract.CLINICAL_VECTOR.name: self.clinical_dim,
            contract.BACKBONE_OUTPUT.name: self.embedding_dim,
            contract.PRIMARY_EMBEDDING.name: self.embedding_dim,
            contract.AUXILIARY_EMBEDDING.name: self.embedding_dim,
        }


def _dtype(spec: TensorSpec) -> int:
    return int(mc.DataType.Value("TYPE_STRING" if spec.dtype == "BYTES" else f"TYPE_{spec.dtype}"))


def _input(spec: TensorSpec, widths: dict[str, int], name: str | None = None) -> mc.ModelInput:
    tensor = mc.ModelInput(
        name=name or spec.name,
        data_type=_dtype(spec),
        dims=spec.resolve_dims(widths),
        optional=spec.optional,
    )
    if -1 in spec.dims:
        tensor.allow_ragged_batch = True  # encoded DICOMs differ in length within a batch
    return tensor


def _output(spec: TensorSpec, widths: dict[str, int], name: str | None = None) -> mc.ModelOutput:
    return mc.ModelOutput(
        name=name or spec.name, data_type=_dtype(spec), dims=spec.resolve_dims(widths)
    )


def _scheduling(
    spec: RepositorySpec, config: mc.ModelConfig, instances: int, max_batch: int
) -> None:
    config.max_batch_size = max_batch
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    policy = batching.default_queue_policy
    if spec.max_queue_size:
        policy.max_queue_size = spec.max_queue_size
    policy.default_timeout_microseconds = spec.queue_timeout_us
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True  # a client deadline shortens the queue timeout
    config.instance_group.append(
        mc.ModelInstanceGroup(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    )


def preprocess_config(spec: RepositorySpec) -> mc.ModelConfig:
    """The Python-backend ``preprocess`` model (same in both profiles)."""
    config = mc.ModelConfig(name=contract.PREPROCESS, backend="python")
    config.input.extend(_input(t, spec.widths) for t in contract.ENSEMBLE_INPUTS)
    config.output.extend(_output(t, spec.widths) for t in contract.PREPROCESS_OUTPUTS)
    _scheduling(spec, config, spec.preprocess_instances, spec.preprocess_max_batch)
    warmup = config.model_warmup.add(name="synthetic_study", batch_size=1)
    for tensor in (contract.PRIMARY_DICOM, contract.PRIMARY_REGION, contract.CLINICAL_RECORD):
        item = warmup.inputs[tensor.name]
        item.data_type = _dtype(tensor)
        item.dims.extend(_warmup_dims(tensor))
        item.input_data_file = tensor.name
    return config


def _warmup_dims(tensor: TensorSpec) -> list[int]:
    if tensor is contract.PRIMARY_DICOM:
        return [len(_warmup_files()[tensor.name])]
    return list(tensor.dims)


def _engine_config(
    spec: RepositorySpec,
    name: str,
    inputs: list[mc.ModelInput],
    outputs: list[mc.ModelOutput],
    threads: int,
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name)
    if spec.profile == "embedded":
        config.backend = "python"
        config.parameters["intra_op_threads"].string_value = str(threads)
        config.parameters["intra_op_spinning"].string_value = str(spec.engine_spinning).lower()
    elif spec.engine_format == "tensorrt":
        config.platform = "tensorrt_plan"
    else:
        config.platform = "onnxruntime_onnx"
    config.input.extend(inputs)
    config.output.extend(outputs)
    _scheduling(spec, config, spec.backbone_instances, spec.max_batch)
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    for tensor in inputs:
        item = warmup.inputs[tensor.name]
        item.data_type = tensor.data_type
        item.dims.extend(tensor.dims)
        item.zero_data = True
    if spec.profile == "production" and spec.engine_format == "tensorrt":
        config.instance_group[0].kind = mc.ModelInstanceGroup.KIND_GPU
    return config


def backbone_config(spec: RepositorySpec, name: str) -> mc.ModelConfig:
    """A backbone engine: ``image`` (3, 256, 256) -> ``embedding`` (D,)."""
    config = _engine_config(
        spec,
        name,
        [_input(contract.BACKBONE_INPUT, spec.widths)],
        [_output(contract.BACKBONE_OUTPUT, spec.widths)],
        spec.engine_threads,
    )
    if spec.profile == "embedded" and name == contract.BACKBONE_AUXILIARY:
        # studies without an auxiliary image send zeros; see aln.export.engine.OnnxEngine
        config.parameters["skip_all_zero_rows"].string_value = "true"
    return config


def fusion_config(spec: RepositorySpec) -> mc.ModelConfig:
    """The fusion head engine."""
    return _engine_config(
        spec,
        contract.FUSION_HEAD,
        [_input(t, spec.widths) for t in contract.FUSION_INPUTS],
        [_output(t, spec.widths) for t in contract.FUSION_OUTPUTS],
        threads=1,
    )


def ensemble_config(spec: RepositorySpec) -> mc.ModelConfig:
    """``aln_ensemble``: the four steps wired by tensor name."""
    config = mc.ModelConfig(
        name=contract.ENSEMBLE, platform="ensemble", max_batch_size=spec.preprocess_max_batch
    )
    config.input.extend(_input(t, spec.widths) for t in contract.ENSEMBLE_INPUTS)
    for tensor in config.input:
        tensor.allow_ragged_batch = False  # ragged batching is a property of composing models
    config.output.extend(_output(t, spec.widths) for t in contract.ENSEMBLE_OUTPUTS)
    steps = config.ensemble_scheduling.step
    pre = steps.add(model_name=contract.PREPROCESS, model_version=-1)
    for tensor in contract.ENSEMBLE_INPUTS:
        pre.input_map[tensor.name] = tensor.name
    for tensor in contract.PREPROCESS_OUTPUTS:
        pre.output_map[tensor.name] = tensor.name
    for model, image, embedding in (
        (contract.BACKBONE_PRIMARY, contract.PRIMARY_IMAGE, contract.PRIMARY_EMBEDDING),
        (contract.BACKBONE_AUXILIARY, contract.AUXILIARY_IMAGE, contract.AUXILIARY_EMBEDDING),
    ):
        step = steps.add(model_name=model, model_version=-1)
        step.input_map[contract.BACKBONE_INPUT.name] = image.name
        step.output_map[contract.BACKBONE_OUTPUT.name] = embedding.name
    fusion = steps.add(model_name=contract.FUSION_HEAD, model_version=-1)
    for tensor in contract.FUSION_INPUTS:
        fusion.input_map[tensor.name] = tensor.name
    for tensor in contract.FUSION_OUTPUTS:
        fusion.output_map[tensor.name] = tensor.name
    return config


def model_configs(spec: RepositorySpec) -> dict[str, mc.ModelConfig]:
    """Every model's config, keyed by model name."""
    return {
        contract.ENSEMBLE: ensemble_config(spec),
        contract.PREPROCESS: preprocess_config(spec),
        contract.BACKBONE_PRIMARY: backbone_config(spec, contract.BACKBONE_PRIMARY),
        contract.BACKBONE_AUXILIARY: backbone_config(spec, contract.BACKBONE_AUXILIARY),
        contract.FUSION_HEAD: fusion_config(spec),
    }


def to_pbtxt(config: mc.ModelConfig) -> str:
    """The ``config.pbtxt`` text of a config."""
    header = "# Generated by `aln build-repo` from aln.export.repository; do not edit by hand.\n"
    text: str = text_format.MessageToString(config)
    return header + text


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text into a ``ModelConfig`` (raises on any invalid field)."""
    return text_format.Parse(text, mc.ModelConfig())


@lru_cache(maxsize=1)
def _warmup_files() -> dict[str, bytes]:
    """A tiny synthetic study for the preprocess warm-up, as Triton warm-up data files."""
    from aln.preprocessing.synth import synth_case

    case = synth_case(
        np.random.default_rng(0), "ge", "explicit", shape=(512, 400), laterality="L", view="CC"
    )
    record = json.dumps(case.clinical).encode()
    return {
        contract.PRIMARY_DICOM.name: case.dicom,
        contract.PRIMARY_REGION.name: np.array(
            [case.lesion_centre[0], case.lesion_centre[1], *([np.nan] * 4)], "<f4"
        ).tobytes(),
        # BYTES warm-up data is length-prefixed, as in Triton's serialised string tensors.
        contract.CLINICAL_RECORD.name: len(record).to_bytes(4, "little") + record,
    }


def write_repository(
    out: Path, spec: RepositorySpec, engines: dict[str, Path] | None, manifest: Path | None
) -> Path:
    """Write a complete repository (configs, adapters, engines, manifest, warm-up data).

    Args:
        out: Repository folder to create (replaced atomically if it exists).
        spec: The configs' spec.
        engines: Maps composing model name to its engine file (``.onnx`` or ``.plan``); None
            writes configs and adapters only (the committed ``model_repository/``).
        manifest: The checkpoint manifest the preprocess model reads (schema, crop, model id).

    Returns:
        ``out``.
    """
    out = Path(out)
    with staged_directory(out) as staging:
        for name, config in model_configs(spec).items():
            folder = staging / name
            (folder / "1").mkdir(parents=True)
            (folder / "config.pbtxt").write_text(to_pbtxt(config))
            adapter = ADAPTER_SOURCE / name / "1" / "model.py"
            if config.backend == "python":
                shutil.copy2(adapter, folder / "1" / "model.py")
            if engines is not None and name in engines:
                suffix = ".plan" if spec.engine_format == "tensorrt" else ".onnx"
                shutil.copy2(engines[name], folder / "1" / f"model{suffix}")
        warmup = staging / contract.PREPROCESS / WARMUP_DIR
        warmup.mkdir()
        for name, data in _warmup_files().items():
            (warmup / name).write_bytes(data)
        if manifest is not None:
            shutil.copy2(manifest, staging / contract.PREPROCESS / "1" / MANIFEST_NAME)
    return out


COMMITTED_SPEC = RepositorySpec(embedding_dim=768, clinical_dim=40)
"""The spec of the committed ``model_repository/`` configs: the default checkpoint
(``swinv2_tiny_window8_256``, clinical schema v1) with default serving settings."""


def write_configs(folder: Path, spec: RepositorySpec) -> None:
    """Write only the ``config.pbtxt`` files (regenerates the committed ``model_repository/``)."""
    for name, config in model_configs(spec).items():
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name / "config.pbtxt").write_text(to_pbtxt(config))


def build_repository(
    source: Path, out: Path, spec_overrides: dict[str, object] | None = None
) -> tuple[Path, RepositorySpec]:
    """``aln build-repo``: a servable repository from a checkpoint or an export folder.

    Args:
        source: A checkpoint folder (exported to ONNX on the way, parity enforced) or an
            ``aln export`` output folder (its graphs are used as they are).
        out: The repository folder.
        spec_overrides: :class:`RepositorySpec` fields to set (profile, max_batch, ...).

    Raises:
        CheckpointError: The checkpoint is invalid.
        ValueError: An invalid spec field.
    """
    from aln.export.onnx_export import GRAPH_FILES
    from aln.export.pipeline import REPORT_FILE, export_checkpoint
    from aln.model.checkpoint import MANIFEST_FILE, read_manifest

    source = Path(source)
    manifest = read_manifest(source)
    spec = RepositorySpec(
        embedding_dim=manifest.embedding_dim,
        clinical_dim=manifest.clinical_dim,
        **(spec_overrides or {}),  # type: ignore[arg-type]  # checked in __post_init__
    )
    suffix = ".plan" if spec.engine_format == "tensorrt" else ".onnx"
    with tempfile.TemporaryDirectory(dir=Path(out).resolve().parent) as scratch:
        export_dir = source
        if not (source / REPORT_FILE).is_file():
            export_dir = Path(scratch) / "export"
            export_checkpoint(
                source,
                export_dir,
                spec.engine_format,
                "fp32" if spec.engine_format == "onnx" else "fp16",
            )
        engines = {
            model: (export_dir / name).with_suffix(suffix) for model, name in GRAPH_FILES.items()
        }
        if spec.engine_format == "tensorrt":
            from aln.export.tensorrt import check_plan_compatible

            for plan in engines.values():
                check_plan_compatible(plan)  # a plan only loads where it was built
        write_repository(out, spec, engines, export_dir / MANIFEST_FILE)
    return Path(out), spec
