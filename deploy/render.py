"""``aln deploy render``: the container recipe, Kubernetes and KServe objects for one spec.

From a :class:`aln.deploy.spec.DeploySpec` and the model repository ``aln build-repo --profile
production`` wrote, :func:`render` writes a folder that is also the container's build context::

    Dockerfile                  NGC Triton + this project's wheel (the preprocess model's code)
    src/                        the project's source, built into a wheel by the first stage
    model_repository/           the production repository, copied as it is
    kubernetes/                 Deployment, Service, HPA, PDB, ServiceMonitor, adapter rule
    kserve/                     a ServingRuntime on the same image, and the InferenceService
    render.json                 the spec and the repository it was rendered from

The autoscaler scales on the time a study spends queued in the composing models per request,
computed by the Prometheus Adapter from Triton's own counters (``nv_inference_queue_duration_us``
over ``nv_inference_request_success`` of the ensemble).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomllib
import yaml

from aln.deploy.spec import DeploySpec, DeploySpecError
from aln.preprocessing import contract
from aln.preprocessing.manifest import MANIFEST_FILE
from aln.serving.server import ALLOCATORS, repository_allocator

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
KSERVE_HTTP_PORT, KSERVE_GRPC_PORT = 8080, 9000
"""Ports of the KServe predictor container (KServe routes gRPC to the port named ``h2c``)."""
MODELS = "/models"
TRITON_UID = 1000
"""The uid of ``triton-server``, the NGC Triton image's unprivileged user."""
QUEUE_METRIC = "aln_queue_us_per_request"
"""The custom metric the adapter serves and the HPA scales on (microseconds)."""
DRAIN_MARGIN_S = 30
"""Seconds of grace beyond the longest queue timeout: admitted requests finish before SIGKILL."""
PRE_STOP_S = 5
"""Seconds a stopping pod keeps serving while its endpoint is withdrawn from the Service."""
PYTHON_BACKEND_MODELS = {contract.PREPROCESS, contract.EXPLAIN}
"""The models that stay in Triton's Python backend in the production profile."""


@dataclass(frozen=True)
class RepositoryFacts:
    """What the manifests take from the production repository.

    Attributes:
        queue_timeout_s: The longest queue timeout of its models (the grace period covers it).
        engine_backend: The backbones' Triton backend (``onnxruntime``, ``openvino``, ``tensorrt``).
        max_batch: The backbones' ``max_batch_size``.
    """

    queue_timeout_s: float
    engine_backend: str
    max_batch: int


class _Dumper(yaml.SafeDumper):
    """YAML as Kubernetes users write it (yamllint's default style).

    Lists are indented under their key; multi-line strings are literal blocks.
    """

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def to_yaml(body: dict[str, Any]) -> str:
    """One object as a YAML document."""
    return "---\n" + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=100)


def repository_facts(repository: Path) -> RepositoryFacts:
    """What the manifests need from a production repository (and a check that it is one).

    Raises:
        DeploySpecError: Not a model repository, or not of the production profile (an engine
            served by the Python backend: an embedded repository).
    """
    from aln.export.repository import parse_pbtxt

    repository = Path(repository)
    configs = {}
    for name in (
        contract.ENSEMBLE,
        contract.PREPROCESS,
        contract.BACKBONE_PRIMARY,
        contract.BACKBONE_AUXILIARY,
        contract.FUSION_HEAD,
    ):
        path = repository / name / "config.pbtxt"
        if not path.is_file():
            raise DeploySpecError(
                f"A repository of {str(repository)!r} is invalid: it has no {name}/config.pbtxt "
                "(build it with aln build-repo --profile production)"
            )
        configs[name] = parse_pbtxt(path.read_text())
    for name, config in configs.items():
        if config.backend == "python" and name not in PYTHON_BACKEND_MODELS:
            raise DeploySpecError(
                f"A repository of {str(repository)!r} is invalid: its {name} runs in the Python "
                "backend, so it is an embedded-profile repository; build it with aln build-repo "
                "--profile production"
            )
    if not (repository / contract.PREPROCESS / "1" / MANIFEST_FILE).is_file():
        raise DeploySpecError(
            f"A repository of {str(repository)!r} is invalid: preprocess/1/{MANIFEST_FILE} is "
            "missing (the configs alone cannot serve; build it from a checkpoint)"
        )
    timeouts = [
        c.dynamic_batching.default_queue_policy.default_timeout_microseconds
        for c in configs.values()
    ]
    backbone = configs[contract.BACKBONE_PRIMARY]
    return RepositoryFacts(
        queue_timeout_s=max(timeouts) / 1e6,
        engine_backend=backbone.backend or backbone.platform,
        max_batch=backbone.max_batch_size,
    )


def grace_period_s(facts: RepositoryFacts) -> int:
    """Termination grace: the longest queue timeout, the pre-stop pause and a drain margin."""
    return math.ceil(facts.queue_timeout_s) + PRE_STOP_S + DRAIN_MARGIN_S


def _labels(spec: DeploySpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "aln-triton", "app.kubernetes.io/instance": spec.name}


def _meta(spec: DeploySpec, name: str | None = None) -> dict[str, Any]:
    return {"name": name or spec.name, "namespace": spec.namespace, "labels": _labels(spec)}


def _resources(spec: DeploySpec) -> dict[str, Any]:
    gpus = str(spec.gpus_per_replica)
    memory = f"{spec.memory_gib}Gi"
    return {
        "requests": {"cpu": str(spec.cpu_per_replica), "memory": memory, "nvidia.com/gpu": gpus},
        "limits": {"memory": memory, "nvidia.com/gpu": gpus},
    }


def _shm(spec: DeploySpec) -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_gib}Gi"}}


def triton_args(
    spec: DeploySpec, facts: RepositoryFacts, repository: str, http: int, grpc: int
) -> list[str]:
    """The ``tritonserver`` command line of a replica."""
    return [
        "tritonserver",
        f"--model-repository={repository}",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        "--strict-readiness=true",
        # admitted requests finish within the grace period, then the process exits
        f"--exit-timeout-secs={grace_period_s(facts) - PRE_STOP_S}",
    ]


def deployment(spec: DeploySpec, facts: RepositoryFacts) -> dict[str, Any]:
    """The replicas: GPU resources, probes on Triton's health endpoints, a draining stop."""
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}}
    container = {
        "name": "tritonserver",
        "image": spec.image,
        "args": triton_args(spec, facts, MODELS, HTTP_PORT, GRPC_PORT),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "resources": _resources(spec),
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": math.ceil(spec.startup_s / 10),
        },
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec),
        "spec": {
            "replicas": spec.min_replicas,
            "selector": {"matchLabels": _labels(spec)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels(spec)},
                "spec": {
                    "terminationGracePeriodSeconds": grace_period_s(facts),
                    "nodeSelector": {"nvidia.com/gpu.product": spec.node_label},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [container],
                    "volumes": [_shm(spec)],
                },
            },
        },
    }


def service(spec: DeploySpec) -> dict[str, Any]:
    """The gRPC (h2c), HTTP and metrics ports.

    Kubernetes balances connections, not gRPC calls: put an L7 balancer (nginx, as
    ``aln deploy balancer`` configures it) or a mesh in front of it.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec),
        "spec": {
            "selector": _labels(spec),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc",
                 "appProtocol": "kubernetes.io/h2c"},
                {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }  # fmt: skip


def autoscaler(spec: DeploySpec, target: str | None = None) -> dict[str, Any]:
    """An HPA on the queue time per request (the adapter's :data:`QUEUE_METRIC`)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(spec, target),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target or spec.name,
            },
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": QUEUE_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(round(spec.queue_time_target_ms * 1000)),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": 300},
            },
        },
    }


def disruption_budget(spec: DeploySpec) -> dict[str, Any]:
    """At most one replica away at a time for voluntary disruptions (drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(spec)}},
    }


def adapter_rules(spec: DeploySpec) -> dict[str, Any]:
    """The Prometheus Adapter rule serving :data:`QUEUE_METRIC` per pod, as a ConfigMap."""
    ensemble = contract.ENSEMBLE
    queued = (
        "sum by (<<.GroupBy>>) (\n"
        f'  rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>, model!="{ensemble}"}}[1m]))'
    )
    answered = (
        "sum by (<<.GroupBy>>) (\n"
        f'  rate(nv_inference_request_success{{<<.LabelMatchers>>, model="{ensemble}"}}[1m]))'
    )
    rules = {
        "rules": [
            {
                "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
                "resources": {
                    "overrides": {
                        "namespace": {"resource": "namespace"},
                        "pod": {"resource": "pod"},
                    }
                },
                "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
                # queued microseconds over answered studies; 0 while idle, never a division by 0
                "metricsQuery": f"{queued}\n/ clamp_min({answered}, 1e-9)\n",
            }
        ]
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, f"{spec.name}-adapter-rules"),
        "data": {"config.yaml": to_yaml(rules)},
    }


def service_monitor(spec: DeploySpec) -> dict[str, Any]:
    """Prometheus Operator scraping of Triton's metrics port."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(spec),
        "spec": {
            "selector": {"matchLabels": _labels(spec)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def serving_runtime(spec: DeploySpec, facts: RepositoryFacts) -> dict[str, Any]:
    """A KServe ServingRuntime: Triton on this project's image (it holds the preprocess code)."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _meta(spec, f"{spec.name}-triton"),
        "spec": {
            "supportedModelFormats": [{"name": "triton", "version": "2", "autoSelect": False}],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": spec.image,
                    "args": triton_args(
                        spec, facts, "/mnt/models", KSERVE_HTTP_PORT, KSERVE_GRPC_PORT
                    ),
                    "ports": [
                        {"name": "h2c", "containerPort": KSERVE_GRPC_PORT, "protocol": "TCP"}
                    ],
                    "resources": _resources(spec),
                    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                }
            ],
            "volumes": [_shm(spec)],
        },
    }


def inference_service(spec: DeploySpec) -> dict[str, Any]:
    """The same model as a KServe InferenceService (raw deployment; scaled by our HPA)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            **_meta(spec),
            "annotations": {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                # KServe makes no HPA of its own: kserve/hpa.yaml scales on queue time instead
                "serving.kserve.io/autoscalerClass": "external",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": spec.min_replicas,
                "maxReplicas": spec.max_replicas,
                "nodeSelector": {"nvidia.com/gpu.product": spec.node_label},
                "model": {
                    "modelFormat": {"name": "triton"},
                    "runtime": f"{spec.name}-triton",
                    "protocolVersion": "grpc-v2",
                    "storageUri": spec.storage_uri,
                    "resources": _resources(spec),
                },
            }
        },
    }


def dockerfile(spec: DeploySpec, allocator: str) -> str:
    """The container recipe: NGC Triton with this project's wheel and the model repository.

    ``allocator``: the malloc the repository is served with (a key of ``ALLOCATORS``).
    """
    library = ALLOCATORS[allocator]
    preload = (
        ""
        if library is None
        else f"""\
# {allocator} in place of glibc's malloc, as `aln serve` runs (docs/reliability.md); the NGC
# image ships it (Triton's model-management guide)
ENV LD_PRELOAD={library[0]}
"""
    )
    return f"""\
# Generated by `aln deploy render` from aln.deploy; do not edit by hand.
# Stage 1: this project as a wheel (the preprocess and explain models' Python code).
FROM python:3.12-slim AS wheel
COPY src/ /src/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

# Stage 2: Triton {spec.triton_image.rsplit(":", 1)[-1]} with the wheel, its pinned dependencies
# and the production model repository (engines served by Triton's own backends).
FROM {spec.triton_image}
COPY --from=wheel /wheels/ /wheels/
COPY src/constraints.txt /wheels/constraints.txt
RUN pip install --no-cache-dir --constraint /wheels/constraints.txt \\
        "$(ls /wheels/aln_triton-*.whl)[preprocessing]"
COPY model_repository/ {MODELS}/
{preload}# triton-server, the NGC image's unprivileged user (numeric, so runAsNonRoot can check it)
USER {TRITON_UID}
EXPOSE {HTTP_PORT} {GRPC_PORT} {METRICS_PORT}
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository={MODELS}"]
"""


def project_root() -> Path:
    """The source checkout this package runs from (the image builds its wheel from it).

    Raises:
        DeploySpecError: The package is installed without its source (a wheel install).
    """
    import aln

    root = Path(aln.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise DeploySpecError(
            "aln deploy render needs a source checkout (the image builds this project's wheel "
            f"from it); {root} has no pyproject.toml"
        )
    return root


def source_files(root: Path) -> Iterable[Path]:
    """What the wheel is built from: the packaging files and every package folder."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    yield from (root / name for name in ("pyproject.toml", "constraints.txt", "README.md"))
    for folder in sorted(folders):
        yield from (
            p for p in sorted((root / folder).rglob("*.py")) if "__pycache__" not in p.parts
        )


def render(spec: DeploySpec, repository: Path, out: Path) -> list[Path]:
    """Write the build context and the manifests; returns the recipe, manifests and record.

    Raises:
        DeploySpecError: The repository is not a production one, or the spec does not fit it.
    """
    repository, out = Path(repository), Path(out)
    facts = repository_facts(repository)
    if out.exists():
        shutil.rmtree(out)
    root = project_root()
    for source in source_files(root):
        target = out / "src" / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copytree(repository, out / "model_repository")
    written = [out / "Dockerfile"]
    written[0].write_text(dockerfile(spec, repository_allocator(repository)))
    objects = {
        "kubernetes/deployment.yaml": deployment(spec, facts),
        "kubernetes/service.yaml": service(spec),
        "kubernetes/hpa.yaml": autoscaler(spec),
        "kubernetes/pdb.yaml": disruption_budget(spec),
        "kubernetes/servicemonitor.yaml": service_monitor(spec),
        "kubernetes/prometheus-adapter-rules.yaml": adapter_rules(spec),
        "kserve/servingruntime.yaml": serving_runtime(spec, facts),
        "kserve/inferenceservice.yaml": inference_service(spec),
        "kserve/hpa.yaml": autoscaler(spec, f"{spec.name}-predictor"),
    }
    for name, body in objects.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(body))
        written.append(path)
    record = {"spec": spec.as_dict(), "repository": str(repository), "facts": asdict(facts)}
    written.append(out / "render.json")
    written[-1].write_text(json.dumps(record, indent=2) + "\n")
    return sorted(written)
