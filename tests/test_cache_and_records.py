"""Feature cache reuse, atomic writes, and what a run record holds."""
import json
import os

import numpy as np
import pytest

from bench import load_backbone
from bench._io import atomic_write_json
from bench.cache import extract_features
from bench.data import TransformSpec, build_eval_transform, open_dataset

SPEC = TransformSpec(resize=36, crop=32)


def _extract(backbone, root, cache):
    ds = open_dataset("imagenet", root, "val", build_eval_transform(SPEC), mini=True)
    return extract_features(backbone, ds, split="val", dataset_name="imagenet", feature_mode="pool",
                            transform=SPEC.to_dict(), data_root=str(root), cache_dir=cache, batch_size=128)


def _counting(backbone):
    calls = {"n": 0}
    orig = backbone.model.forward_features

    def counted(x):
        calls["n"] += 1
        return orig(x)
    backbone.model.forward_features = counted
    return calls


def test_second_extraction_reads_the_cache(mini_root, tmp_path):
    bb = load_backbone(None, "resnet18")
    calls = _counting(bb)
    first = _extract(bb, mini_root, tmp_path)
    n_forward = calls["n"]
    assert n_forward > 0 and not first.meta["cache_hit"]
    second = _extract(bb, mini_root, tmp_path)
    assert calls["n"] == n_forward, "cached features must not run the model again"
    assert second.meta["cache_hit"]
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert len(first) == 360 and first.features.shape[1] == 512


def test_cache_key_changes_with_weights_and_transform(mini_root, tmp_path):
    a, b = load_backbone(None, "resnet18", seed=0), load_backbone(None, "resnet18", seed=1)
    fa, fb = _extract(a, mini_root, tmp_path), _extract(b, mini_root, tmp_path)
    assert not fb.meta["cache_hit"] and fa.meta["cache"] != fb.meta["cache"]
    assert not np.allclose(fa.features, fb.features)


def test_half_written_cache_is_never_read(mini_root, tmp_path):
    bb = load_backbone(None, "resnet18")
    good = _extract(bb, mini_root, tmp_path)
    entry = good.meta["cache"]
    npz = os.path.join(entry, "val.npz")
    with open(npz, "r+b") as f:           # truncate as a crash mid-write would (without our atomic rename)
        f.truncate(os.path.getsize(npz) // 2)
    again = _extract(bb, mini_root, tmp_path)
    assert not again.meta["cache_hit"]
    np.testing.assert_allclose(again.features, good.features, rtol=1e-5, atol=1e-5)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "rec.json"
    atomic_write_json(target, {"v": 1})

    def boom(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rec.json"], "no temp file may be left behind"


def test_features_from_the_miniatures_are_never_comparable(tmp_path):
    """meta.json `"mini": true` (what `bench extract` writes on the miniatures) makes a --features run a miniature
    run, whatever path the numbers came by; a folder without it stays a real-data run."""
    import json

    import numpy as np

    from bench.cli import main
    rng = np.random.default_rng(0)
    for name, mini in (("mini_feats", True), ("real_feats", False)):
        d = tmp_path / name
        d.mkdir()
        for split, n in (("train", 60), ("val", 20)):
            np.savez(d / f"{split}.npz", features=rng.normal(size=(n, 8)).astype(np.float32),
                     labels=np.arange(n) % 3)
        if mini:
            (d / "meta.json").write_text(json.dumps({"mini": True, "feature_mode": "pool"}))
        assert main(["run", "--protocol", "knn", "--features", str(d), "--out", str(tmp_path / name / "out")]) == 0
        (rec,) = [json.loads(p.read_text()) for p in (tmp_path / name / "out" / "runs").glob("*.json")]
        assert ("miniature data" in rec["not_comparable_because"]) is mini and rec["dataset"]["mini"] is mini


def test_cpu_extraction_threads_give_the_dataloaders_batches_exactly(mini_root):
    """The CPU loader (decode in a thread pool, in turn with the forward pass) must not change a single pixel,
    label or index, nor the batch boundaries, against torch's DataLoader over the same samples."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from bench.cache import _decoded_in_threads
    from bench.data import IndexedDataset
    ds = open_dataset("imagenet", mini_root, "val", build_eval_transform(SPEC), mini=True)
    samples = Subset(IndexedDataset(ds), list(range(3, len(ds), 2)))      # a strided shard, odd length
    ours = list(_decoded_in_threads(samples, 37, threads=3))
    ref = list(DataLoader(samples, batch_size=37, shuffle=False))
    assert len(ours) == len(ref) > 1
    for (xa, ya, ia), (xb, yb, ib) in zip(ours, ref):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
