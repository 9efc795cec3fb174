"""depth, video_segmentation, correspondence: the batched machinery against the reference loops, layouts refused
in one line, and every protocol end to end on a ViT (tokens + CLS) and a CNN (stages) on the miniatures."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import DataError
from bench.protocols._video_segmentation_propagate import neighbourhood_mask, propagate_step

# ------------------------------------------------------------------ label propagation vs DINO's code


def ref_restrict_neighborhood(h, w, size):
    """DINO eval_video_segmentation.py:85-99, its four nested loops."""
    mask = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * size + 1):
                for q in range(2 * size + 1):
                    if i - size + p < 0 or i - size + p >= h:
                        continue
                    if j - size + q < 0 or j - size + q >= w:
                        continue
                    mask[i, j, i - size + p, j - size + q] = 1
    return mask.reshape(h * w, h * w)


def ref_label_propagation(feat_tar, list_frame_feats, list_segs, h, w, topk, size):
    """DINO eval_video_segmentation.py:113-150 (feature extraction left out), per context frame as written."""
    ncontext = len(list_frame_feats)
    feat_sources = torch.stack(list_frame_feats)
    feat_tar = F.normalize(feat_tar, dim=1, p=2)
    feat_sources = F.normalize(feat_sources, dim=1, p=2)
    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)
    if size > 0:
        aff *= ref_restrict_neighborhood(h, w, size).unsqueeze(0).repeat(ncontext, 1, 1)
    aff = aff.transpose(2, 1).reshape(-1, h * w)
    tk_val, _ = torch.topk(aff, dim=0, k=topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0
    aff = aff / torch.sum(aff, keepdim=True, axis=0)
    segs = torch.cat(list_segs)
    nmb_context, C, h, w = segs.shape
    segs = segs.reshape(nmb_context, C, -1).transpose(2, 1).reshape(-1, C).T
    return torch.mm(segs, aff).reshape(1, C, h, w)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_propagation_matches_dino(size):
    g = torch.Generator().manual_seed(size)
    h, w, d, n_ctx, c = 5, 7, 16, 4, 3
    feats = [torch.randn(d, h * w, generator=g) for _ in range(n_ctx)]
    segs = [torch.rand(1, c, h, w, generator=g) for _ in range(n_ctx)]
    tar = torch.randn(h * w, d, generator=g)
    mask = neighbourhood_mask(h, w, size) if size else None
    if size:
        assert torch.equal(mask, ref_restrict_neighborhood(h, w, size))
    ours = propagate_step(tar, torch.stack(feats), torch.cat(segs), h=h, w=w, topk=5, mask=mask)
    ref = ref_label_propagation(tar, feats, segs, h, w, 5, size)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-5)


def test_frame_size_follows_read_frame():
    from bench.protocols.video_segmentation import frame_size
    assert frame_size(480, 854, 480) == (480, 832)          # 854 → 832: floored to a multiple of 64
    assert frame_size(854, 480, 480) == (832, 480)
    assert frame_size(240, 320, 240) == (240, 320)


# ------------------------------------------------------------------ keypoint transfer vs DIFT's loop


def test_transfer_matches_dift_loop():
    from bench.protocols.correspondence import transfer_keypoints
    g = torch.Generator().manual_seed(0)
    src, trg = torch.randn(8, 6, 5, generator=g), torch.randn(8, 7, 4, generator=g)
    src_size, trg_size = (30, 25), (35, 20)
    kps = np.array([[0, 0], [24, 29], [10, 13], [3, 20]])
    ours = transfer_keypoints(src, trg, kps, src_size, trg_size)
    src_ft = torch.nn.Upsample(size=src_size, mode="bilinear")(src[None])
    trg_ft = torch.nn.Upsample(size=trg_size, mode="bilinear")(trg[None])
    h, w = trg_ft.shape[-2:]
    for k, p in enumerate(kps):
        src_vec = F.normalize(src_ft[0, :, p[1], p[0]].view(1, 8)).transpose(0, 1)
        trg_vec = F.normalize(trg_ft.view(8, -1).transpose(0, 1))
        cos_map = torch.mm(trg_vec, src_vec).view(h, w).numpy()
        y, x = np.unravel_index(cos_map.argmax(), cos_map.shape)
        assert (ours[k] == [x, y]).all()


# ------------------------------------------------------------------ dense maps: ViT tokens + CLS, CNN stages


def test_dense_maps_vit_and_cnn():
    import timm
    from bench.protocols._depth_features import DenseSpec, center_pad, dense_maps
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64).eval()
    out = dense_maps(vit, torch.zeros(2, 3, 70, 90), DenseSpec(layers=(2, -1), norm=False, cls=True))
    assert [m.shape for m, _ in out] == [(2, 192, 5, 6)] * 2 and out[0][1].shape == (2, 192)   # padded 80×96
    assert center_pad(torch.ones(1, 1, 70, 90), 16).shape[-2:] == (80, 96)
    crop = dense_maps(vit, torch.zeros(1, 3, 70, 90), DenseSpec(layers=(-1,), pad="crop"))
    assert crop[0][0].shape == (1, 192, 4, 5) and crop[0][1] is None
    cnn = timm.create_model("resnet18").eval()
    maps = dense_maps(cnn, torch.zeros(1, 3, 64, 96), DenseSpec(layers=(-4, -1)))
    assert [m.shape[1:] for m, _ in maps] == [(64, 16, 24), (512, 2, 3)]


def test_linear_bins_head_is_the_expectation_over_uniform_bins():
    from bench.protocols._depth_heads import LinearBinsHead
    head = LinearBinsHead(4, n_bins=3, min_depth=1.0, max_depth=3.0, upsample=2)
    with torch.no_grad():
        head.conv_depth.weight.zero_()
        head.conv_depth.bias.copy_(torch.tensor([0.0, 0.0, 0.9]))   # relu + 0.1 → (0.1, 0.1, 1.0) / 1.2
    out = head([torch.zeros(1, 4, 2, 3)])
    assert out.shape == (1, 1, 4, 6)
    assert torch.allclose(out, torch.full_like(out, (0.1 * 1 + 0.1 * 2 + 1.0 * 3) / 1.2))


def test_dpt_head_on_vit_grid_and_cnn_pyramid():
    from bench.protocols._depth_heads import DPTHead, head_input
    vit = DPTHead([8] * 4, channels=16, post_process_channels=(4, 8, 8, 8), min_depth=0.5)
    maps = head_input([(torch.randn(2, 8, 6, 8), torch.randn(2, 8)) for _ in range(4)])
    out = vit(maps)
    assert out.shape == (2, 1, 6 * 16, 8 * 16) and (out >= 0.5).all()    # back to the input size of a /16 ViT
    cnn = DPTHead([4, 8, 16, 32], channels=16, post_process_channels=(4, 8, 8, 8), resample=False)
    out = cnn([torch.randn(1, c, 32 // s, 48 // s) for c, s in ((4, 1), (8, 2), (16, 4), (32, 8))])
    assert out.shape[-2:] == (32 * 4, 48 * 4)                            # the finest stage (stride 4) × 4


# ------------------------------------------------------------------ layouts refused in one line


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
    from bench.data.mini import write_minis
    root = tmp_path_factory.mktemp("dense_minis")
    write_minis(root, ["nyu", "DAVIS", "SPair-71k"])
    return root


@pytest.mark.parametrize("dataset,split,remove,named", [
    ("nyu", "test", "nyu/nyu_test.txt", "nyu_test.txt"),
    ("davis2017", "val", "DAVIS/ImageSets", "ImageSets/2017/val.txt"),
    ("davis2017", "val", "DAVIS/Annotations/480p/digits-01", "digits-01"),
    ("spair71k", "test", "SPair-71k/PairAnnotation", "PairAnnotation/test"),
    ("spair71k", "test", "SPair-71k/JPEGImages/five", "five/"),
])
def test_wrong_layout_is_one_line_naming_the_path(minis, tmp_path, dataset, split, remove, named):
    from bench.data import open_dataset
    root = tmp_path / "root"
    shutil.copytree(minis, root)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataError) as e:
        open_dataset(dataset, root, split, None, mini=True)
    msg = str(e.value)
    assert "\n" not in msg and named in msg


def test_missing_depth_map_is_named(minis, tmp_path):
    from bench.data import open_dataset
    root = tmp_path / "root"
    shutil.copytree(minis, root)
    ds = open_dataset("nyu", root, "test", None, mini=True)
    ds.depths[0].unlink()
    with pytest.raises(DataError, match=ds.depths[0].name):
        ds.depth(0)


def test_split_file_cannot_point_outside(minis, tmp_path):
    from bench.data import open_dataset
    root = tmp_path / "root"
    shutil.copytree(minis, root)
    (root / "nyu" / "nyu_test.txt").write_text("/../../etc/passwd /x/sync_depth_00000.png 518.8\n")
    with pytest.raises(DataError, match="outside the dataset folder"):
        open_dataset("nyu", root, "test", None, mini=True)


# ------------------------------------------------------------------ end to end on a ViT (CLI, miniatures)


@pytest.mark.parametrize("args", [
    ["--protocol", "video_segmentation"],
    ["--protocol", "correspondence"],
    ["--protocol", "depth", "--quick", "--set", "quick_iterations=2"],
])
def test_protocols_run_on_vit_tokens(minis, tmp_path, args):
    from bench.cli import main
    rc = main(["run", *args, "--model", "test_vit", "--data-root", str(minis),
               "--out", str(tmp_path / "out"), "--seed", "0"])
    assert rc == 0
    rec = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert rec["dataset"]["mini"] and not rec["comparable"]
    assert all(np.isfinite(v) for v in rec["metrics"].values())
    dense = next(v for v in rec["inputs"].values() if "dense" in v)["dense"]
    if args[1] == "depth":
        assert dense["cls"] is True and dense["layers"] == [-1]     # lin1: last block + CLS, as DINOv2
    else:
        assert dense["cls"] is False and dense["norm"] is True


@pytest.mark.parametrize("protocol", ["depth", "video_segmentation", "correspondence"])
def test_every_preset_resolves_and_names_its_source(protocol):
    import yaml
    from bench.presets import presets_dir, resolve_preset
    from bench.protocols import get_protocol
    spec = get_protocol(protocol)
    for name, body in yaml.safe_load((presets_dir() / f"{protocol}.yaml").read_text())["presets"].items():
        preset, _ = resolve_preset(protocol, spec.preset_cls, name, {})
        assert preset.paper and ":" in preset.source, name
