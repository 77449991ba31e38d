import json
import shutil

import pytest
import torch

from aln.model.checkpoint import load_checkpoint, new_demo_checkpoint
from aln.model.errors import CheckpointError, ModelError
from aln.preprocessing.crop import CropSpec
from aln.preprocessing.errors import ManifestError
from aln.preprocessing.manifest import FORMAT_VERSION, read_manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "demo"
    new_demo_checkpoint(out, "efficientnet_b0", seed=3)
    return out


def _copy(demo, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(demo, target)
    return target


def test_demo_checkpoint_round_trip_and_is_marked(demo):
    _net, manifest = load_checkpoint(demo)
    assert (
        manifest.training["status"] == "untrained demo"
        and "none" in manifest.training["clinical_validity"]
    )
    assert manifest.backbone == "efficientnet_b0" and manifest.embedding_dim == 1280
    assert manifest.clinical_dim == manifest.schema.width == 40
    assert manifest.crop == CropSpec(method="fixed_mm", size_mm=50.0, size_px=512, margin_mm=5.0)
    assert manifest.auxiliary is True  # the demo serves both branches
    assert len(manifest.weights_sha256) == 64
    again = new_demo_checkpoint(demo.parent / "again", "efficientnet_b0", seed=3)
    assert again.weights_sha256 == manifest.weights_sha256  # seeded


def test_missing_weights_file(demo, tmp_path):
    target = _copy(demo, tmp_path)
    (target / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights.safetensors"):
        load_checkpoint(target)


def test_wrong_digest(demo, tmp_path):
    target = _copy(demo, tmp_path)
    data = bytearray((target / "weights.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (target / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="'weights_sha256'.*changed or corrupted"):
        load_checkpoint(target)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"backbone": "vit_huge"}, CheckpointError, "backbone name of 'vit_huge' is invalid"),
        ({"embedding_dim": 99}, CheckpointError, "'embedding_dim' is 99"),
        ({"clinical_dim": 12}, ManifestError, "'clinical_dim' is 12 but the clinical schema"),
        ({"format_version": 7}, ManifestError, "'format_version' .* is 7"),
        ({"input_size": 384}, ManifestError, "'input_size' is 384"),
        ({"surprise": 1}, ManifestError, "'surprise' .* is not known"),
        ({"auxiliary": "yes"}, ManifestError, "'auxiliary' .* is 'yes', it must be true or false"),
        ({"crop": {"method": "square"}}, ManifestError, "crop method of 'square' is invalid"),
        ({"crop": {"zoom": 2}}, ManifestError, "'crop' .*unexpected keyword argument 'zoom'"),
    ],
)
def test_mismatched_manifest(demo, tmp_path, change, error, message):
    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    raw.update(change)
    (target / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(error, match=message):
        load_checkpoint(target)


def test_missing_manifest_key(demo, tmp_path):
    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    del raw["crop"]
    (target / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="'crop' is missing"):
        read_manifest(target)


@pytest.mark.parametrize(
    ("training", "auxiliary"),
    [
        ({"status": "untrained demo"}, True),  # demo checkpoints served both branches
        ({"status": "trained", "config": {"auxiliary": False}}, False),
        ({"status": "trained", "config": {"auxiliary": True}}, True),
    ],
)
def test_version_1_manifests_are_migrated(demo, tmp_path, training, auxiliary):
    """Version 1 kept the auxiliary flag in the training config; it is now a typed field."""
    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    del raw["auxiliary"], raw["calibration"], raw["operating_point"]
    raw.update(format_version=1, training=training)
    (target / "manifest.json").write_text(json.dumps(raw))
    manifest = read_manifest(target)
    assert manifest.auxiliary is auxiliary and manifest.format_version == FORMAT_VERSION
    assert manifest.calibration is None


def test_version_2_manifests_are_uncalibrated(demo, tmp_path):
    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    del raw["calibration"], raw["operating_point"]
    raw.update(format_version=2)
    (target / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(target).calibration is None


def test_version_3_manifests_have_no_operating_point(demo, tmp_path):
    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    del raw["operating_point"]
    raw.update(format_version=3)
    (target / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(target).operating_point is None


def test_an_operating_point_without_calibration_is_refused_at_load(demo, tmp_path):
    from aln.training.operating_point import choose_operating_point

    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    point = choose_operating_point([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.6], "sensitivity", 0.9)
    raw["operating_point"] = point.to_dict()
    (target / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(
        ManifestError, match="'operating_point' .* is set but 'calibration' is null"
    ):
        load_checkpoint(target)
    raw["calibration"] = {
        "method": "platt",
        "slope": 1.0,
        "intercept": 0.0,
        "fitted_on": "val",
        "cases": 4,
    }
    raw["operating_point"]["threshold"] = 2.0
    (target / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="'operating_point.threshold' .* is 2.0"):
        load_checkpoint(target)


@pytest.mark.parametrize(
    ("calibration", "named"),
    [
        ("platt", "'calibration' .* must be null or an object"),
        (
            {"method": "isotonic", "slope": 1, "intercept": 0, "fitted_on": "val", "cases": 9},
            "'calibration.method' .* 'isotonic'",
        ),
        (
            {"method": "platt", "slope": -0.5, "intercept": 0, "fitted_on": "val", "cases": 9},
            "'calibration.slope' .* above 0",
        ),
        (
            {"method": "platt", "slope": "1", "intercept": 0, "fitted_on": "val", "cases": 9},
            "'calibration.slope' .* not a number",
        ),
        (
            {
                "method": "platt",
                "slope": 1,
                "intercept": float("nan"),
                "fitted_on": "val",
                "cases": 9,
            },
            "'calibration.intercept' .* not finite",
        ),
        (
            {"method": "temperature", "slope": 2, "intercept": 0.3, "fitted_on": "val", "cases": 9},
            "temperature scaling has none",
        ),
    ],
)
def test_a_malformed_calibration_is_refused_at_load_naming_the_field(
    demo, tmp_path, calibration, named
):
    target = _copy(demo, tmp_path)
    raw = json.loads((target / "manifest.json").read_text())
    raw["calibration"] = calibration
    (target / "manifest.json").write_text(json.dumps(raw, allow_nan=True))
    with pytest.raises(ManifestError, match=named):
        load_checkpoint(target)


def test_unknown_backbone_for_demo(tmp_path):
    with pytest.raises(ModelError, match="must be one of swinv2_tiny_window8_256"):
        new_demo_checkpoint(tmp_path / "x", "vgg16")
    assert not (tmp_path / "x").exists()


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import aln.model.checkpoint as checkpoint

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        new_demo_checkpoint(tmp_path / "out", "efficientnet_b0")
    assert list(tmp_path.iterdir()) == []


def test_network_with_and_without_auxiliary(demo):
    net, _ = load_checkpoint(demo)
    image = torch.randn(2, 3, 256, 256)
    clinical = torch.randn(2, 40)
    with torch.no_grad():
        absent_a = net(image, torch.zeros_like(image), torch.zeros(2, 1), clinical)[1]
        absent_b = net(image, torch.randn_like(image), torch.zeros(2, 1), clinical)[1]
        present = net(image, torch.randn_like(image), torch.ones(2, 1), clinical)[1]
    # an absent auxiliary branch contributes nothing, whatever image is fed to it
    torch.testing.assert_close(absent_a, absent_b)
    assert present.shape == (2, 1) and ((present > 0) & (present < 1)).all()
