"""Plain state-dict loading, coverage, and the loud failures (issue 2 scope; family layouts are issue 3)."""
import os

import pytest
import torch
import torchvision

from bench import load_backbone
from bench.errors import CheckpointError


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(7)
    model = torchvision.models.resnet18()
    model.eval()
    return model


def _ref_features(model, x):
    fc, model.fc = model.fc, torch.nn.Identity()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.fc = fc


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "module"])
def test_plain_layouts_load_fully_and_match(reference, tmp_path, wrap):
    sd = reference.state_dict()
    obj = {"bare": sd, "model": {"model": sd, "epoch": 3}, "state_dict": {"state_dict": sd},
           "module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    bb = load_backbone(path, "resnet18")
    assert bb.report.coverage == 1.0 and bb.report.missing == [] and bb.report.dropped == {"classifier head": 2}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.features(x), _ref_features(reference, x))


def test_safetensors_file(reference, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    assert load_backbone(path, "resnet18").report.coverage == 1.0


def test_partial_load_fails_with_missing_keys_unless_allowed(reference, tmp_path):
    sd = {k: v for k, v in reference.state_dict().items() if not k.startswith("layer4")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"only .*% of resnet18 loaded.*layer4"):
        load_backbone(path, "resnet18")
    bb = load_backbone(path, "resnet18", allow_partial=True)
    assert 0.5 < bb.report.coverage < 1 and all(k.startswith("layer4") for k in bb.report.missing)


@pytest.mark.parametrize("arch,match", [("resnet50", "shape mismatch"), ("resnet34", "only"),
                                        ("vit_tiny_patch16_224", "weights are a ResNet but --arch vit_tiny")])
def test_wrong_arch_fails(reference, tmp_path, arch, match):
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(CheckpointError, match=match):
        load_backbone(path, arch)


def test_truncated_and_empty_files(reference, tmp_path):
    path = tmp_path / "trunc.pth"
    torch.save(reference.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_backbone(path, "resnet18")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_backbone(tmp_path / "empty.pth", "resnet18")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_pickle_global_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": payload}, path)
    with pytest.raises(CheckpointError, match=r"refused to unpickle the global 'posix.system'.*--trust-checkpoint"):
        load_backbone(path, "resnet18")
    assert not marker.exists()


def test_argparse_namespace_is_allowed(reference, tmp_path):
    import argparse
    path = tmp_path / "with_args.pth"
    torch.save({"model": reference.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    assert load_backbone(path, "resnet18").report.coverage == 1.0


def test_random_backbone_is_seeded():
    a, b, c = (load_backbone(None, "resnet18", seed=s) for s in (0, 0, 1))
    assert a.weights_id == b.weights_id != c.weights_id
    assert a.report.family == "random"


def test_torchvision_only_arch_loses_its_classifier():
    bb = load_backbone(None, "tv:alexnet")
    assert bb.report.library == "torchvision"
    with torch.no_grad():
        assert bb.features(torch.randn(1, 3, 224, 224)).shape == (1, 4096)
