"""Generated configs: valid ModelConfig protobufs, committed copies in sync, both profiles."""

import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from aln.export.repository import (
    COMMITTED_REPOSITORY,
    COMMITTED_SPEC,
    model_configs,
    parse_pbtxt,
    to_pbtxt,
    write_committed,
)
from aln.preprocessing import contract
from aln.serving.spec import ADAPTERS, EngineSettings, RepositorySpec

MODELS = [
    contract.ENSEMBLE,
    contract.PREPROCESS,
    contract.BACKBONE_PRIMARY,
    contract.BACKBONE_AUXILIARY,
    contract.FUSION_HEAD,
    contract.EXPLAIN,
]


STALE = (
    "model_repository/ is stale: regenerate with "
    "python -c 'from aln.export.repository import write_committed; write_committed()'"
)


@pytest.mark.parametrize("name", MODELS)
def test_committed_configs_parse_and_match_the_generator(name):
    committed = parse_pbtxt((COMMITTED_REPOSITORY / name / "config.pbtxt").read_text())
    assert committed == model_configs(COMMITTED_SPEC)[name], STALE


def test_committed_tree_is_exactly_what_the_generator_writes(tmp_path: Path):
    write_committed(tmp_path)
    generated = {
        p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
    }
    committed = {
        p.relative_to(COMMITTED_REPOSITORY): p.read_bytes()
        for p in COMMITTED_REPOSITORY.rglob("*")
        if p.is_file() and p.name != ".gitkeep"
    }
    assert generated == committed, STALE
    assert not any(p.is_symlink() for p in COMMITTED_REPOSITORY.rglob("*"))


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_every_config_round_trips_through_modelconfig(profile):
    for name, config in model_configs(RepositorySpec(768, 40, profile=profile)).items():
        assert parse_pbtxt(to_pbtxt(config)) == config
        assert config.name == name


def test_the_explain_model_serves_in_both_profiles_with_its_chunk():
    for profile in ("embedded", "production"):
        configs = model_configs(RepositorySpec(768, 40, profile=profile, explain_chunk=4))
        explain = configs[contract.EXPLAIN]
        assert explain.backend == "python" and explain.max_batch_size == 1
        assert explain.instance_group[0].count == 1
        assert explain.parameters["occlusion_chunk"].string_value == "4"
        whole = model_configs(RepositorySpec(768, 40, profile=profile, max_batch=16))
        assert whole[contract.EXPLAIN].parameters["occlusion_chunk"].string_value == "16"
        assert [i.name for i in explain.input][-1] == "explain_grid"
        assert [o.name for o in explain.output][:3] == [
            "explanation_map",
            "explanation_crop",
            "explanation_box",
        ]
    ensemble = configs[contract.ENSEMBLE]
    assert json.loads(ensemble.parameters["operating_point"].string_value) == {
        "model_version": "",
        "operating_point": None,
    }


def test_ensemble_wiring_uses_contract_names():
    ensemble = model_configs(COMMITTED_SPEC)[contract.ENSEMBLE]
    assert ensemble.platform == "ensemble"
    assert [i.name for i in ensemble.input] == [t.name for t in contract.ENSEMBLE_INPUTS]
    assert {i.name for i in ensemble.input if i.optional} == {
        "auxiliary_dicom",
        "auxiliary_region",
        "request_options",
    }
    assert [o.name for o in ensemble.output] == [
        "aln_probability",
        "aln_logit",
        "aln_decision",
        "provenance",
    ]
    steps = {s.model_name: s for s in ensemble.ensemble_scheduling.step}
    assert steps[contract.BACKBONE_AUXILIARY].input_map["image"] == "auxiliary_image"
    assert steps[contract.FUSION_HEAD].output_map["aln_probability"] == "aln_probability"


def test_composing_models_batch_queue_and_warm_up():
    spec = RepositorySpec(
        768, 40, max_batch=16, preprocess_instances=3, max_queue_size=10, queue_timeout_us=5_000_000
    )
    for name, config in model_configs(spec).items():
        if name == contract.ENSEMBLE:
            assert not config.HasField("dynamic_batching")  # an ensemble has no queue of its own
            assert config.max_batch_size == 1  # one study per request
            continue
        # preprocess and explain take one study at a time per instance; the engines batch
        one_at_a_time = name in (contract.PREPROCESS, contract.EXPLAIN)
        assert config.max_batch_size == (1 if one_at_a_time else 16)
        policy = config.dynamic_batching.default_queue_policy
        assert policy.max_queue_size == 10 and policy.default_timeout_microseconds == 5_000_000
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
        # no warm-up for explain: one would be dozens of backbone runs at every load
        assert len(config.model_warmup) == (0 if name == contract.EXPLAIN else 1)
    assert model_configs(spec)[contract.PREPROCESS].instance_group[0].count == 3
    dicom = model_configs(spec)[contract.PREPROCESS].input[0]
    assert (
        dicom.name == "primary_dicom"
        and dicom.data_type == mc.TYPE_UINT8
        and list(dicom.dims) == [-1]
        and dicom.allow_ragged_batch
    )


def test_default_queues_shed_by_time_not_size():
    """Triton 2.51 hangs after sustained max_queue_size rejections; time bounds the queues."""
    for name, config in model_configs(COMMITTED_SPEC).items():
        if name != contract.ENSEMBLE:
            policy = config.dynamic_batching.default_queue_policy
            assert policy.max_queue_size == 0 and policy.default_timeout_microseconds == 5_000_000


def test_production_profile_engines():
    onnx = model_configs(RepositorySpec(768, 40, profile="production"))
    assert onnx[contract.BACKBONE_PRIMARY].platform == "onnxruntime_onnx"
    assert onnx[contract.PREPROCESS].backend == "python"
    trt = model_configs(RepositorySpec(768, 40, profile="production", engine_format="tensorrt"))
    assert trt[contract.FUSION_HEAD].platform == "tensorrt_plan"
    assert trt[contract.BACKBONE_PRIMARY].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    # same preprocessing in both profiles
    assert onnx[contract.PREPROCESS] == model_configs(COMMITTED_SPEC)[contract.PREPROCESS]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_openvino_in_both_profiles_from_one_spec(precision):
    fields = {"engine_format": "openvino", "engine_precision": precision, "engine_threads": 2}
    production = model_configs(RepositorySpec(768, 40, profile="production", **fields))
    embedded = model_configs(RepositorySpec(768, 40, **fields))
    backbone = production[contract.BACKBONE_PRIMARY]
    assert backbone.backend == "openvino" and not backbone.platform
    parameters = {k: v.string_value for k, v in backbone.parameters.items()}
    assert parameters["INFERENCE_NUM_THREADS"] == "2" and parameters["NUM_STREAMS"] == "1"
    assert ("HINT_BF16" in parameters) == (precision == "bf16")
    served = EngineSettings.from_parameters(
        {k: v.string_value for k, v in embedded[contract.BACKBONE_PRIMARY].parameters.items()}
    )
    head = EngineSettings.from_parameters(
        {k: v.string_value for k, v in embedded[contract.FUSION_HEAD].parameters.items()}
    )
    assert served.precision == precision and served.threads == 2
    assert head.precision == ("fp32" if precision == "int8" else precision)  # head not quantised
    for configs in (production, embedded):  # the provenance names the engines in both
        label = configs[contract.PREPROCESS].parameters["engine"].string_value
        assert label == f"openvino/{precision}"
    # everything but the engines' own settings is the same in both profiles
    assert production[contract.PREPROCESS] == embedded[contract.PREPROCESS]
    assert production[contract.ENSEMBLE] == embedded[contract.ENSEMBLE]
    assert backbone.dynamic_batching == embedded[contract.BACKBONE_PRIMARY].dynamic_batching


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "cloud"}, "profile of 'cloud'"),
        ({"engine_format": "tensorrt"}, "invalid for the embedded profile, it serves onnx or"),
        ({"engine_format": "tflite"}, "engine format of 'tflite' is invalid"),
        ({"engine_precision": "bf16"}, "'bf16' is invalid for onnx engines, it must be one of"),
        ({"engine_format": "openvino", "engine_precision": "fp16"}, "'fp16' is invalid for open"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us of -1"),
        ({"max_batch": 0}, "max_batch of 0"),
        ({"explain_chunk": -1}, r"explain_chunk of -1 is invalid, it must be 0 \(a whole"),
        (
            {"explain_chunk": 64},
            r"explain_chunk of 64 is invalid, it must be 0 \(a whole batch\) to max_batch \(32\)",
        ),
        ({"explain_instances": 0}, "explain_instances of 0"),
    ],
)
def test_invalid_spec(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RepositorySpec(768, 40, **kwargs)


def test_adapters_are_one_import_of_the_installed_package(tmp_path: Path):
    """Each model.py imports its class from aln.serving; the three engines share one adapter."""
    assert set(ADAPTERS) == set(MODELS) - {contract.ENSEMBLE}
    write_committed(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MODELS)
    for name, adapter in ADAPTERS.items():
        source = (tmp_path / name / "1" / "model.py").read_text()
        assert f"from aln.serving.triton_models import {adapter} as TritonPythonModel" in source
    engines = (contract.BACKBONE_PRIMARY, contract.BACKBONE_AUXILIARY, contract.FUSION_HEAD)
    assert {ADAPTERS[m] for m in engines} == {"EngineModel"}
    assert not (tmp_path / contract.ENSEMBLE / "1" / "model.py").exists()


def test_warm_up_data_is_a_packed_synthetic_study():
    from aln.export.repository import _warmup_files

    files = _warmup_files()
    assert files[contract.PRIMARY_DICOM.name][128:132] == b"DICM"
    region = np.frombuffer(files[contract.PRIMARY_REGION.name], "<f4")
    (x, y), bbox = contract.unpack_region(region)
    assert bbox is None and x > 0 and y > 0


def test_engine_parameters_round_trip_through_the_config():
    """The engine model reads back exactly the settings the generator wrote."""
    from aln.serving.spec import EngineSettings

    spec = RepositorySpec(768, 40, engine_threads=3, engine_spinning=True)
    configs = model_configs(spec)
    for name, expected in (
        (contract.BACKBONE_PRIMARY, EngineSettings(3, True, False)),
        (contract.BACKBONE_AUXILIARY, EngineSettings(3, True, True)),
        (contract.FUSION_HEAD, EngineSettings(1, True, False)),
    ):
        parameters = {k: v.string_value for k, v in configs[name].parameters.items()}
        assert EngineSettings.from_parameters(parameters) == expected


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"intra_op_threads": "two"}, "'intra_op_threads' is 'two', it must be an integer"),
        ({"intra_op_spinning": "yes"}, "'intra_op_spinning' is 'yes', it must be true or false"),
        ({"intra_op_threads": "0"}, "threads of 0 is invalid"),
    ],
)
def test_bad_engine_parameters_are_named(parameters, message):
    from aln.serving.spec import EngineSettings

    with pytest.raises(ValueError, match=message):
        EngineSettings.from_parameters(parameters)


def test_tensorrt_plans_without_their_build_record_are_refused(tmp_path):
    """A plan only loads in the TensorRT release and GPU that built it; its sidecar says which."""
    from aln.serving.tensorrt import PlanMismatchError, check_plan_compatible

    plan = tmp_path / "backbone_primary.plan"
    plan.write_bytes(b"not a plan")
    with pytest.raises(
        PlanMismatchError, match="has no backbone_primary.json recording where it was built"
    ):
        check_plan_compatible(plan)
