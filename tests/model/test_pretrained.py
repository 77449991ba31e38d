import re

import pytest
import timm
import torch

from aln.model.backbones import create_backbone
from aln.model.errors import InitWeightsError
from aln.model.pretrained import load_init_weights

NAME = "swinv2_tiny_window8_256"


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return timm.create_model(NAME, num_classes=5).eval()


def _embedding(model, x):
    with torch.no_grad():
        return (
            model.forward_head(model.forward_features(x), pre_logits=True)
            if hasattr(model, "head") and model.num_classes
            else model(x)
        )


def test_timm_format_loads_every_tensor(source, tmp_path):
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    backbone = create_backbone(NAME).eval()
    report = load_init_weights(backbone, NAME, path)
    assert report.loaded == len(backbone.state_dict()) and not report.remapped
    assert report.discarded_classifier == ("head.fc.bias", "head.fc.weight")
    x = torch.randn(1, 3, 256, 256)
    torch.testing.assert_close(backbone(x), _embedding(source, x))


def test_original_swin_v2_layout_is_remapped(source, tmp_path):
    original = {}
    for key, value in source.state_dict().items():
        if "relative_position_index" in key or "relative_coords_table" in key:
            continue
        # the original release merges patches at the end of a stage and names the classifier head.*
        key = re.sub(
            r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key
        )
        original[key.replace("head.fc.", "head.")] = value
    path = tmp_path / "original.pth"
    torch.save({"model": original}, path)
    backbone = create_backbone(NAME).eval()
    report = load_init_weights(backbone, NAME, path)
    assert report.remapped
    x = torch.randn(1, 3, 256, 256)
    torch.testing.assert_close(backbone(x), _embedding(source, x))


def test_partial_file_is_refused(source, tmp_path):
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("layers.3")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(
        InitWeightsError,
        match=r"lacks \d+ of \d+ tensors .*layers\.3.*refusing to leave them at random",
    ):
        load_init_weights(create_backbone(NAME), NAME, path)


def test_wrong_architecture_and_unreadable(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet50", num_classes=0).state_dict(), path)
    with pytest.raises(InitWeightsError, match="lacks"):
        load_init_weights(create_backbone(NAME), NAME, path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InitWeightsError, match="cannot be read"):
        load_init_weights(create_backbone(NAME), NAME, junk)
    with pytest.raises(InitWeightsError, match="does not exist"):
        load_init_weights(create_backbone(NAME), NAME, tmp_path / "absent.pth")
