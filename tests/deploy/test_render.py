"""``aln deploy render``: manifests valid for a pinned Kubernetes, the recipe linted, the model
configs those of ``aln build-repo --profile production``, and impossible specs refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from aln.deploy.render import QUEUE_METRIC, grace_period_s, render, repository_facts
from aln.deploy.spec import DeploySpec, DeploySpecError

KUBERNETES_VERSION = "1.34.0"
"""The Kubernetes release the core objects are validated against (schemas bundled, offline)."""
CRD_KINDS = {"ServiceMonitor", "ServingRuntime", "InferenceService"}
"""Kinds from CRDs (Prometheus Operator, KServe) whose schemas are not available offline."""
BIN = Path(sys.executable).parent


def aln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aln", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def production(onnx_int8, tmp_path_factory):
    """A production repository, written by the command a user runs."""
    out = tmp_path_factory.mktemp("production") / "model_repository"
    built = aln("build-repo", str(onnx_int8), "--out", str(out), "--profile", "production")
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def rendered(production, tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered") / "deploy"
    spec = DeploySpec(
        image="registry.example.org/aln-triton:1.0",
        engine_batch_ms=12.5,
        min_replicas=2,
        max_replicas=6,
        gpu_type="L4",
        queue_time_target_ms=40,
    )
    return spec, render(spec, production, out), out


def manifests(out: Path):
    for path in sorted(out.glob("*/*.yaml")):
        yield path, yaml.safe_load(path.read_text())


def test_core_objects_validate_against_the_pinned_kubernetes(rendered):
    _, _, out = rendered
    kinds, unchecked = [], set()
    for _, body in manifests(out):
        try:
            kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.add(body["kind"])
            continue
        kinds.append(body["kind"])
    assert sorted(set(kinds)) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    assert unchecked == CRD_KINDS  # the README names these as not validated offline


def test_a_broken_manifest_is_caught_by_the_validator(rendered):
    """The validation is real: a misspelt field fails it."""
    _, _, out = rendered
    body = yaml.safe_load((out / "kubernetes" / "deployment.yaml").read_text())
    body["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)


def test_yaml_and_the_container_recipe_are_linted(rendered):
    _, _, out = rendered
    config = "{extends: default, rules: {line-length: {max: 120}}}"
    lint = subprocess.run(
        [str(BIN / "yamllint"), "-s", "-d", config, str(out / "kubernetes"), str(out / "kserve")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout
    hadolint = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(out / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert hadolint.returncode == 0, hadolint.stdout
    recipe = (out / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:25.04-py3" in recipe
    assert "\nENV LD_PRELOAD=libjemalloc.so.2\n" in recipe  # the allocator `aln serve` runs with
    assert (out / "src" / "pyproject.toml").is_file()
    assert (out / "src" / "preprocessing" / "serving.py").is_file()


def test_model_configs_are_those_build_repo_writes(production, rendered):
    _, _, out = rendered
    built = sorted(production.glob("*/config.pbtxt"))
    assert len(built) == 6
    for config in built:
        copy = out / "model_repository" / config.relative_to(production)
        assert copy.read_text() == config.read_text(), config.parent.name


def test_the_objects_agree_with_the_spec_and_the_repository(production, rendered):
    spec, _, out = rendered
    facts = repository_facts(production)
    deployment = yaml.safe_load((out / "kubernetes" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= spec.startup_s
    assert pod["terminationGracePeriodSeconds"] == grace_period_s(facts)
    assert pod["terminationGracePeriodSeconds"] > facts.queue_timeout_s
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    hpa = yaml.safe_load((out / "kubernetes" / "hpa.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == QUEUE_METRIC
    assert metric["target"]["averageValue"] == "40000"  # microseconds
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    rules = yaml.safe_load(
        yaml.safe_load((out / "kubernetes" / "prometheus-adapter-rules.yaml").read_text())["data"][
            "config.yaml"
        ]
    )
    rule = rules["rules"][0]
    assert rule["name"]["as"] == QUEUE_METRIC
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert (
        'nv_inference_request_success{<<.LabelMatchers>>, model="aln_ensemble"}'
        in (rule["metricsQuery"])
    )
    kserve_hpa = yaml.safe_load((out / "kserve" / "hpa.yaml").read_text())
    assert kserve_hpa["spec"]["scaleTargetRef"]["name"] == "aln-triton-predictor"
    record = json.loads((out / "render.json").read_text())
    assert record["spec"]["gpu_type"] == "L4" and record["facts"]["engine_backend"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "A max_replicas of 2 is invalid"),
        ({"queue_time_target_ms": 10}, "A queue_time_target_ms of 10 is invalid"),
        ({"gpu_type": "B300"}, "A gpu_type of 'B300' is invalid: it is unknown; known: T4"),
        ({"image": "aln-triton:latest"}, "A image of 'aln-triton:latest' is invalid"),
        ({"triton_image": "nvcr.io/nvidia/tritonserver:24.12-py3"}, "25.04 or newer"),
        ({"name": "ALN_triton"}, "A name of 'ALN_triton' is invalid"),
    ],
)
def test_impossible_specs_are_refused_naming_the_field(change, named):
    fields = {"image": "registry.example.org/aln-triton:1.0", "engine_batch_ms": 12.5, **change}
    with pytest.raises(DeploySpecError, match=named):
        DeploySpec(**fields)


def test_cli_refuses_an_embedded_repository_and_a_cpu_measurement(tmp_path):
    from aln.export.repository import COMMITTED_REPOSITORY

    common = ["deploy", "render", "--out", str(tmp_path / "out"), "--image", "r/aln:1"]
    embedded = aln(*common, "--repository", str(COMMITTED_REPOSITORY), "--engine-batch-ms", "9")
    assert embedded.returncode == 2
    assert "runs in the Python backend, so it is an embedded-profile" in embedded.stderr
    measured = Path("benchmarks/results/latency-aln_ensemble-cpu-2cores.json").resolve()
    cpu = aln(*common, "--repository", str(tmp_path), "--measured", str(measured))
    assert cpu.returncode == 2 and "not on a H100" in cpu.stderr
    assert not (tmp_path / "out").exists()
