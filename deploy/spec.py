"""What a deployment beyond one machine is made of: one typed spec (:class:`DeploySpec`).

The spec is checked before anything is written.

Every figure the manifests need comes from here or from the production model repository that
``aln build-repo --profile production`` wrote (:func:`aln.deploy.render.render`), so the
container, the Kubernetes objects and the KServe objects cannot disagree with each other or with
the served configs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

GPU_TYPES = {
    "T4": "Tesla-T4",
    "L4": "NVIDIA-L4",
    "A10": "NVIDIA-A10",
    "A100-40GB": "NVIDIA-A100-SXM4-40GB",
    "A100-80GB": "NVIDIA-A100-SXM4-80GB",
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H200": "NVIDIA-H200",
}
"""GPU types a replica can ask for, with the ``nvidia.com/gpu.product`` node label that NVIDIA's
GPU Feature Discovery sets for each (the Deployment's node selector)."""

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.04-py3"
"""The NGC Triton release the container is built on: 25.04 is the first with the fixes to gRPC
request cancellation that the SDK's deadlines rely on."""
MIN_TRITON_RELEASE = (25, 4)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TRITON_TAG = re.compile(r":(\d{2})\.(\d{2})-py3$")


class DeploySpecError(ValueError):
    """A deployment spec that cannot work; the message names the field and why."""


@dataclass(frozen=True)
class DeploySpec:
    """Everything that shapes the rendered deployment.

    Attributes:
        image: The container image the cluster pulls (``registry/aln-triton:1.0``), built from the
            rendered ``Dockerfile``; a tag or digest is required, never ``latest``.
        engine_batch_ms: One engine batch's compute time on ``gpu_type``, measured (Triton's
            ``compute_infer`` per execution of the backbone at the served batch size, as ``aln
            bench latency`` records it). The queue-time target must exceed it: a request waits
            at least for the batch ahead of it, so a lower target scales out forever.
        name: The objects' name (a DNS label).
        namespace: The Kubernetes namespace.
        min_replicas: The fewest replicas (at least 1).
        max_replicas: The most replicas the autoscaler may start.
        gpu_type: One of :data:`GPU_TYPES`.
        gpus_per_replica: GPUs each replica asks for.
        queue_time_target_ms: The autoscaler's target: mean time a study spends queued across
            the composing models, per request, averaged over the replicas.
        startup_s: How long loading and warm-up may take before the startup probe gives up.
        cpu_per_replica: CPU cores requested (preprocessing decodes DICOM on the CPU).
        memory_gib: Memory requested and limited, GiB.
        shm_gib: Size of ``/dev/shm`` (the Python backend moves tensors through it), GiB.
        triton_image: The NGC Triton base image (release 25.04 or newer).
        storage_uri: Where KServe's storage initializer finds the model repository.
    """

    image: str
    engine_batch_ms: float
    name: str = "aln-triton"
    namespace: str = "default"
    min_replicas: int = 1
    max_replicas: int = 4
    gpu_type: str = "H100"
    gpus_per_replica: int = 1
    queue_time_target_ms: float = 50.0
    startup_s: int = 600
    cpu_per_replica: int = 8
    memory_gib: int = 32
    shm_gib: int = 4
    triton_image: str = TRITON_IMAGE
    storage_uri: str = "pvc://aln-models/model_repository"

    def __post_init__(self) -> None:
        _check(bool(_DNS_LABEL.match(self.name)), "name", self.name, "must be a DNS label")
        _check(
            bool(_DNS_LABEL.match(self.namespace)),
            "namespace",
            self.namespace,
            "must be a DNS label",
        )
        _check(
            ":" in self.image.rsplit("/", 1)[-1] or "@" in self.image,
            "image",
            self.image,
            "must name a tag or digest",
        )
        _check(
            not self.image.endswith(":latest"),
            "image",
            self.image,
            "must not be 'latest': a rollout must know what it runs",
        )
        tag = _TRITON_TAG.search(self.triton_image)
        _check(
            tag is not None,
            "triton_image",
            self.triton_image,
            "must be an NGC tritonserver tag like 25.04-py3",
        )
        assert tag is not None
        release = (int(tag.group(1)), int(tag.group(2)))
        _check(
            release >= MIN_TRITON_RELEASE,
            "triton_image",
            self.triton_image,
            "must be release 25.04 or newer (gRPC cancellation fixes)",
        )
        _check(
            self.gpu_type in GPU_TYPES,
            "gpu_type",
            self.gpu_type,
            f"is unknown; known: {', '.join(GPU_TYPES)}",
        )
        for name in ("min_replicas", "gpus_per_replica", "startup_s", "cpu_per_replica"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        for name in ("memory_gib", "shm_gib"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        _check(
            self.max_replicas >= self.min_replicas,
            "max_replicas",
            self.max_replicas,
            f"must be at least min_replicas ({self.min_replicas})",
        )
        _check(self.engine_batch_ms > 0, "engine_batch_ms", self.engine_batch_ms, "must be > 0")
        _check(
            self.queue_time_target_ms > self.engine_batch_ms,
            "queue_time_target_ms",
            self.queue_time_target_ms,
            f"must exceed the engine's batch time ({self.engine_batch_ms} ms on "
            f"{self.gpu_type}): every request waits for the batch ahead of it, so a lower target "
            "would scale out without end",
        )

    @property
    def node_label(self) -> str:
        """The ``nvidia.com/gpu.product`` value replicas are scheduled on."""
        return GPU_TYPES[self.gpu_type]

    def as_dict(self) -> dict[str, Any]:
        """The spec's fields, for the render record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check(ok: bool, field: str, value: object, why: str) -> None:
    if not ok:
        raise DeploySpecError(f"A {field} of {value!r} is invalid: it {why}")


def measured_batch_ms(result: Path, gpu_type: str) -> float:
    """The primary backbone's compute per execution at the largest batch a latency run formed.

    Raises:
        DeploySpecError: The file is not a latency result, or it was measured on another device.
    """
    from aln.preprocessing import contract

    try:
        data = json.loads(Path(result).read_text())
        gpu = data["machine"]["gpu"]
        levels = [level["triton"][contract.BACKBONE_PRIMARY] for level in data["levels"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeploySpecError(
            f"A measured of {str(result)!r} is invalid: it is not an aln bench latency result "
            f"with Triton statistics ({exc})"
        ) from exc
    if not gpu or gpu_type.split("-")[0] not in str(gpu):
        raise DeploySpecError(
            f"A measured of {str(result)!r} is invalid: it was measured on "
            f"{gpu or data['machine'].get('cpu', 'a CPU')}, not on a {gpu_type}"
        )
    busiest = max(levels, key=lambda stats: stats["mean_batch"])
    return float(busiest["compute_infer_ms"])
