"""DeepCluster v1 checkpoint.pth.tar (AlexNet and VGG-16, Sobel input) as main.py saves it, loaded with no flags
and compared with a re-statement of facebookresearch/deepcluster models/alexnet.py and vgg16.py at two sizes."""
import pytest
import torch
import torch.nn as nn

from bench import load_backbone
from bench.errors import CheckpointError
from test_checkpoints import _perturbed

ALEXNET_CFG = [(96, 11, 4, 2), "M", (256, 5, 1, 2), "M", (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"]
VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class Reference(nn.Module):
    """models/alexnet.py / vgg16.py (bn=True, sobel=True): sobel → features → classifier → top_layer."""

    def __init__(self, arch, out=10):
        super().__init__()
        layers, c = [], 2
        for v in (ALEXNET_CFG if arch == "alexnet" else VGG_CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(3, 2) if arch == "alexnet" else nn.MaxPool2d(2, 2))
            else:
                o, k, s, p = v if arch == "alexnet" else (v, 3, 1, 1)
                layers += [nn.Conv2d(c, o, k, s, p), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
                c = o
        self.features = nn.DataParallel(nn.Sequential(*layers))   # main.py wraps the trunk only
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(c, 16), nn.ReLU(True))   # fc6/fc7, shrunk
        self.top_layer = nn.Linear(16, out)
        grayscale = nn.Conv2d(3, 1, kernel_size=1, stride=1, padding=0)
        sobel_filter = nn.Conv2d(1, 2, kernel_size=3, stride=1, padding=1)
        _perturbed(self)
        with torch.no_grad():
            grayscale.weight.fill_(1.0 / 3.0)
            grayscale.bias.zero_()
            sobel_filter.weight[0, 0].copy_(torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]]))
            sobel_filter.weight[1, 0].copy_(torch.tensor([[1, 2, 1], [0, 0, 0], [-1, -2, -1]]))
            sobel_filter.bias.zero_()
        self.sobel = nn.Sequential(grayscale, sobel_filter)

    def conv_map(self, x):
        return self.features(self.sobel(x))


@pytest.fixture(scope="module", params=[("alexnet", (64, 96)), ("vgg16", (32, 64))])
def dc_file(request, tmp_path_factory):
    arch, sizes = request.param
    torch.manual_seed(0)
    ref = Reference(arch).eval()
    path = tmp_path_factory.mktemp("dc") / "checkpoint.pth.tar"
    torch.save({"epoch": 500, "arch": arch, "state_dict": ref.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.05}]}}, path)
    return arch, sizes, ref, path


def test_deepcluster_v1_loads_with_sobel_and_gives_the_trunk_features(dc_file):
    arch, sizes, ref, path = dc_file
    assert any(k.startswith("features.module.0.") for k in torch.load(path)["state_dict"])
    bb = load_backbone(path)
    rep = bb.report
    assert (rep.layout, rep.family, rep.arch, rep.coverage) == ("deepcluster-v1", "deepcluster",
                                                                f"deepcluster_{arch}", 1.0)
    assert set(rep.dropped) == {"classifier (fc6/fc7)", "cluster top layer"} and rep.feature_mode == "pool"
    for s in sizes:
        x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            torch.testing.assert_close(bb.model.forward_features(x), ref.conv_map(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(bb.features(x), ref.conv_map(x).mean((2, 3)), rtol=1e-5, atol=1e-5)


def test_deepcluster_v1_wrong_mapping_would_show(dc_file):
    """With one conv transposed (an HWIO-style slip) the features differ: the check above can fail."""
    arch, sizes, ref, path = dc_file
    bb = load_backbone(path)
    x = torch.randn(2, 3, sizes[0], sizes[0], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        good = bb.features(x)
        w = bb.model.features[3 if arch == "vgg16" else 4].weight
        w.copy_(w.transpose(-1, -2).clone())
        assert (bb.features(x) - good).abs().max() > 1e-4


def test_truncated_deepcluster_trunk_is_refused(dc_file, tmp_path):
    arch, _, ref, path = dc_file
    obj = torch.load(path)
    last_bn = max(int(k.split(".")[2]) for k in obj["state_dict"] if k.startswith("features.module."))
    obj["state_dict"] = {k: v for k, v in obj["state_dict"].items()     # the last conv (its BN stays)
                         if not k.startswith(f"features.module.{last_bn - 1}.")}
    torch.save(obj, tmp_path / "cut.pth.tar")
    with pytest.raises(CheckpointError, match="not a published configuration"):
        load_backbone(tmp_path / "cut.pth.tar")


def test_retrieval_map_is_sobel_then_trunk_without_its_last_pool(dc_file):
    """deepcluster eval_retrieval.py: net.features minus its last max-pool, on net.sobel(image)."""
    from bench.protocols._retrieval_extract import spatial_map
    arch, sizes, ref, path = dc_file
    bb = load_backbone(path)
    x = torch.randn(1, 3, sizes[1], sizes[1], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = nn.Sequential(*list(ref.features.module.children())[:-1])(ref.sobel(x))
        torch.testing.assert_close(spatial_map(bb.model, x), expected, rtol=1e-5, atol=1e-5)


def test_registry_names_load_the_published_files(dc_file, tmp_path, monkeypatch):
    """`--ckpt deepcluster_alexnet` / `deepcluster_vgg16`: the checkpoints.yaml entries (download_model.sh's URLs)
    read main.py's file from the cache, no network once it is there."""
    import shutil
    from bench.backbones import zoo
    arch, sizes, ref, path = dc_file
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    entry = zoo.get_entry(f"deepcluster_{arch}")
    assert entry.url == f"https://dl.fbaipublicfiles.com/deepcluster/{arch}/checkpoint.pth.tar"
    dest = zoo.checkpoint_file(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dest)
    bb = load_backbone(entry.name)
    assert (bb.report.registry_name, bb.report.arch, bb.report.coverage) == (entry.name, f"deepcluster_{arch}", 1.0)
    x = torch.randn(1, 3, sizes[0], sizes[0], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(bb.features(x), ref.conv_map(x).mean((2, 3)), rtol=1e-5, atol=1e-5)
