"""What shapes a served repository: the typed spec and the engine parameters, defined once.

:class:`RepositorySpec` is what ``aln build-repo`` turns into ``config.pbtxt`` files
(:mod:`aln.export.repository`); :class:`EngineSettings` is the part of it an engine model reads
back from its config's ``parameters`` when Triton loads it (:mod:`aln.serving.triton_models`).
Both sides use the parameter names and defaults below, so they cannot drift. It imports only the
contract (numpy): the command line reads its defaults from here without loading any runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Literal

from aln.preprocessing import contract

Profile = Literal["embedded", "production"]
PROFILES: tuple[Profile, ...] = ("embedded", "production")
EngineFormat = Literal["onnx", "openvino", "tensorrt"]
ENGINE_FORMATS: tuple[EngineFormat, ...] = ("onnx", "openvino", "tensorrt")
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
"""The precisions each engine format is exported and served in (fp32 ONNX is the reference)."""
ENGINE_FILES: dict[str, str] = {
    "onnx": "model.onnx",
    "openvino": "model.xml",
    "tensorrt": "model.plan",
}
"""The engine file of a model version folder, per format (an OpenVINO IR also has its ``.bin``;
these are the default names of Triton's ``onnxruntime``, ``openvino`` and ``tensorrt`` backends)."""
EMBEDDED_FORMATS: tuple[EngineFormat, ...] = ("onnx", "openvino")
"""Formats the embedded profile serves (its server has no TensorRT backend)."""
ENGINE_PARAMETER = "engine"
"""The ``parameters`` entry of the preprocess config naming the engines (``format/precision``),
which the served provenance reports."""


def model_precision(model: str, precision: str) -> str:
    """The precision one composing model's engine is exported and served in.

    An int8 export keeps its fusion head fp32: a few thousand multiply-adds on embeddings,
    nothing to save, and a calibration that would need embeddings, not images.
    """
    if model == contract.FUSION_HEAD and precision == "int8":
        return "fp32"
    return precision


def check_engine_precision(engine_format: str, precision: str) -> None:
    """Refuse a precision the format has no export for.

    Raises:
        ValueError: Naming the format's precisions.
    """
    allowed = ENGINE_PRECISIONS.get(engine_format)
    if allowed is None:
        raise ValueError(
            f"An engine format of '{engine_format}' is invalid, it must be one of "
            f"{', '.join(ENGINE_FORMATS)}"
        )
    if precision not in allowed:
        raise ValueError(
            f"A precision of '{precision}' is invalid for {engine_format} engines, it must be one "
            f"of {', '.join(allowed)}"
        )


WARMUP_DIR = "warmup"
"""Folder of the preprocess model holding its warm-up data files."""

DECODE_PARAMETER = "decode"
"""The ``parameters`` entry of the preprocess config naming its decode strategy."""

CHUNK_PARAMETER = "occlusion_chunk"
"""The ``parameters`` entry of the explain model: occluded crops per backbone request."""

ADAPTERS = {
    contract.PREPROCESS: "PreprocessModel",
    contract.BACKBONE_PRIMARY: "EngineModel",
    contract.BACKBONE_AUXILIARY: "EngineModel",
    contract.FUSION_HEAD: "EngineModel",
    contract.EXPLAIN: "ExplainModel",
}
"""Python-backend model name -> the class of :mod:`aln.serving.triton_models` that serves it."""


def adapter_source(model: str) -> str:
    """The ``model.py`` written into a repository for ``model``: one import, nothing else.

    The adapters live in the installed package, so a wheel install builds and serves a
    repository without the source tree.
    """
    return (
        f'"""Triton Python-backend model {model}: see aln.serving.triton_models."""\n\n'
        f"from aln.serving.triton_models import {ADAPTERS[model]} as TritonPythonModel\n\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


@dataclass(frozen=True)
class EngineSettings:
    """How one engine model runs its graph; written to and read from its config ``parameters``.

    Attributes:
        threads: Intra-op threads of the engine runtime.
        precision: The precision the engine was exported in; an OpenVINO engine runs bf16 with
            OpenVINO's inference-precision hint, every other precision is carried by the file.
        force_precision: Serve a bf16 engine on a CPU without native bf16 (it then runs in fp32);
            without it such an engine is refused at load (:func:`aln.serving.cpu.check_precision`).
        spinning: Let idle intra-op threads spin-wait (ONNX Runtime's own default). Off: in a
            server the cores are shared with preprocessing; measured on 2 cores, spinning cost
            22 core-ms per study in the backbone and 5 in the fusion head
            (``benchmarks/README.md``).
        skip_all_zero_rows: Skip rows whose every input value is 0 and answer zeros for them
            (the auxiliary backbone: a study without an auxiliary image sends zeros, a real crop
            is never all zeros after normalisation, and the fusion head multiplies that branch by
            the present flag, so no answer changes).
    """

    threads: int = 1
    spinning: bool = False
    skip_all_zero_rows: bool = False
    precision: str = "fp32"
    force_precision: bool = False

    PARAMETERS: ClassVar[dict[str, str]] = {
        "threads": "intra_op_threads",
        "spinning": "intra_op_spinning",
        "skip_all_zero_rows": "skip_all_zero_rows",
        "precision": "engine_precision",
        "force_precision": "force_precision",
    }
    """Attribute -> name of the ``parameters`` entry in ``config.pbtxt``."""

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"An engine threads of {self.threads} is invalid, it must be >= 1")
        if not any(self.precision in p for p in ENGINE_PRECISIONS.values()):
            raise ValueError(f"An engine precision of '{self.precision}' is invalid")

    def to_parameters(self) -> dict[str, str]:
        """The config ``parameters`` entries (string values, as Triton stores them)."""
        return {self.PARAMETERS[f.name]: _format(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> EngineSettings:
        """Read back from a model config's ``parameters`` (absent entries take the defaults).

        Raises:
            ValueError: An entry that is not a number (threads) or not ``true``/``false``.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            text = parameters.get(cls.PARAMETERS[f.name])
            if text is None:
                continue
            if f.type in ("str", str):
                values[f.name] = text
            elif f.type in ("bool", bool):
                if text not in ("true", "false"):
                    raise ValueError(
                        f"Engine parameter '{cls.PARAMETERS[f.name]}' is '{text}', it must be "
                        "true or false"
                    )
                values[f.name] = text == "true"
            else:
                try:
                    values[f.name] = int(text)
                except ValueError:
                    raise ValueError(
                        f"Engine parameter '{cls.PARAMETERS[f.name]}' is '{text}', it must be an "
                        "integer"
                    ) from None
        return cls(**values)


def _format(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class RepositorySpec:
    """Everything that shapes the generated configs.

    Attributes:
        embedding_dim: Backbone embedding width (from the checkpoint).
        clinical_dim: Clinical vector width (from the checkpoint's schema).
        profile: ``embedded`` or ``production``.
        engine_format: Engines as ONNX, OpenVINO IR, or TensorRT plans (production only). The
            embedded profile runs ONNX Runtime or OpenVINO in its Python-backend engine models;
            the production profile writes configs for Triton's own ``onnxruntime``, ``openvino``
            and ``tensorrt`` backends.
        engine_precision: The precision the engines were exported in (:data:`ENGINE_PRECISIONS`;
            ``aln build-repo`` takes it from the export report). The fusion head of an int8
            export stays fp32 (a few thousand multiply-adds on embeddings).
        force_precision: Serve bf16 engines on a CPU without native bf16 (embedded).
        max_batch: ``max_batch_size`` of the engines (backbones, fusion head).
        preprocess_max_batch: ``max_batch_size`` of ``preprocess`` and of the ensemble (a client
            request carries one study). 1 by default: the preprocess model handles a batch one
            study after another, so batching saves nothing and makes every study wait for its
            batch-mates; under overload a batch of 32 held studies for seconds past the queue
            timeout (docs/reliability.md).
        preprocess_instances: Python processes decoding DICOM in parallel.
        backbone_instances: Instances of each engine (backbones and fusion head). Two
            single-threaded instances by default: on the 2-core CI machine they served more
            studies/s at concurrency 8 than one two-threaded instance (a parallel ONNX Runtime
            run waits for its slowest thread, and preprocessing shares the cores), at the cost of
            single-request latency; ``aln bench search`` measures both (``benchmarks/README.md``).
        max_queue_delay_us: How long the dynamic batcher waits to grow a batch.
        max_queue_size: Requests queued per model beyond which new ones are rejected; 0 (the
            default) sets no size bound and sheds by time only. Triton 2.51 (the embedded
            server) stops answering after sustained rejections over a composing model's
            ``max_queue_size`` (docs/reliability.md), while time-based rejection keeps goodput at
            capacity and recovers; the queue stays bounded by arrival rate x timeout.
        queue_timeout_us: Time a request may wait in a queue before it is rejected.
        engine_threads: Intra-op threads per backbone instance (embedded); the fusion head, a few
            thousand multiply-adds, always runs on one.
        engine_spinning: Let idle engine threads spin-wait (embedded); see
            :class:`EngineSettings`.
        decode: How ``preprocess`` decodes: ``region`` (only the crop: the default) or ``full``
            (the whole image; the ablation's step before region decoding). Same crops either way.
        skip_absent_auxiliary: The auxiliary backbone skips the all-zero rows of studies without
            an auxiliary image (embedded profile; see :class:`EngineSettings`). Off only in the
            ablation, to measure what the skip is worth.
        explain_instances: Explanations computed at once (``aln_explain`` instances). One by
            default: an explanation is dozens of backbone runs, and the engines serve
            predictions first of all.
        explain_chunk: Occluded crops per backbone request of an explanation; 0 (the default)
            sends a whole backbone batch (``max_batch``). Measured on 2 cores
            (``benchmarks/results/explain-*.json``): chunks smaller than a batch let the
            dynamic batcher put predictions into an explanation's batch, where they wait for
            all of it; a full batch runs alone on one backbone instance while predictions take
            the other.
    """

    embedding_dim: int
    clinical_dim: int
    profile: Profile = "embedded"
    engine_format: EngineFormat = "onnx"
    engine_precision: str = "fp32"
    force_precision: bool = False
    max_batch: int = 32
    preprocess_max_batch: int = 1
    preprocess_instances: int = 2
    backbone_instances: int = 2
    max_queue_delay_us: int = 2000
    max_queue_size: int = 0
    queue_timeout_us: int = 5_000_000
    engine_threads: int = EngineSettings.threads
    engine_spinning: bool = EngineSettings.spinning
    decode: Literal["region", "full"] = "region"
    skip_absent_auxiliary: bool = True
    explain_instances: int = 1
    explain_chunk: int = 0

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(
                f"A profile of '{self.profile}' is invalid, it must be one of {', '.join(PROFILES)}"
            )
        if self.decode not in ("region", "full"):
            raise ValueError(f"A decode of '{self.decode}' is invalid, it must be region or full")
        check_engine_precision(self.engine_format, self.engine_precision)
        if self.profile == "embedded" and self.engine_format not in EMBEDDED_FORMATS:
            raise ValueError(
                f"An engine_format of '{self.engine_format}' is invalid for the embedded profile, "
                f"it serves {' or '.join(EMBEDDED_FORMATS)} only (its server has no TensorRT "
                "backend); use --profile production"
            )
        for name in (
            "max_batch",
            "preprocess_max_batch",
            "preprocess_instances",
            "backbone_instances",
            "engine_threads",
            "queue_timeout_us",
            "explain_instances",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"A {name} of {getattr(self, name)} is invalid, it must be at least 1"
                )
        if not 0 <= self.explain_chunk <= self.max_batch:
            raise ValueError(
                f"An explain_chunk of {self.explain_chunk} is invalid, it must be 0 (a whole "
                f"batch) to max_batch ({self.max_batch}): the backbones take batches of that size"
            )
        for name in ("max_queue_size", "max_queue_delay_us"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"A {name} of {getattr(self, name)} is invalid, it must be 0 or more"
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

    def engine_settings(self, model: str, *, skip_all_zero_rows: bool = False) -> EngineSettings:
        """The settings one engine model is served with (the fusion head runs on one thread)."""
        threads = 1 if model == contract.FUSION_HEAD else self.engine_threads
        return EngineSettings(
            threads,
            self.engine_spinning,
            skip_all_zero_rows,
            self.model_precision(model),
            self.force_precision,
        )

    def model_precision(self, model: str) -> str:
        """The precision ``model``'s engine runs in (:func:`model_precision`)."""
        return model_precision(model, self.engine_precision)

    @property
    def occlusion_chunk(self) -> int:
        """Occluded crops per backbone request of an explanation (``explain_chunk`` resolved)."""
        return self.explain_chunk or self.max_batch

    @property
    def engine_label(self) -> str:
        """``format/precision``: what the served provenance names (``openvino/int8``)."""
        return f"{self.engine_format}/{self.engine_precision}"


def spec_default(name: str) -> Any:
    """The default of a :class:`RepositorySpec` field (the command line's defaults come from here).

    Raises:
        KeyError: ``name`` is not a field with a default.
    """
    for f in fields(RepositorySpec):
        if f.name == name and f.default is not MISSING:
            return f.default
    raise KeyError(name)
