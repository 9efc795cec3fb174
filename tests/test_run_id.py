"""One stable run id per record (issue 19): settings + weights, nothing that cannot move the number."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from bench.records import record_run_id, run_id

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_ctx(root, cache, weights_id="test:tiny-conv-runid"):
    from bench.backbones import Backbone, LoadReport, Preprocessing
    from bench.data import DataRoot
    from bench.runner import RunContext
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    bb = Backbone(model, LoadReport(source="random", arch="tiny", library="test", family="random",
                                    feature_mode="pool"), Preprocessing(), weights_id=weights_id)
    return RunContext(dataset="imagenet", data_root=DataRoot(root, mini=True, origin="test"), backbone=bb,
                      resolution=32, cache_dir=cache, batch_size=256)


def test_same_settings_and_weights_give_one_record_across_cache_hits_and_data_roots(mini_root, tmp_path):
    from bench.runner import run_protocol
    other_root = tmp_path / "elsewhere"
    other_root.symlink_to(mini_root, target_is_directory=True)   # the same data under another path
    out, cache = tmp_path / "results", tmp_path / "cache"
    first, path1, _ = run_protocol("knn", _tiny_ctx(mini_root, cache), preset="instdisc", out_dir=out)
    again, path2, _ = run_protocol("knn", _tiny_ctx(mini_root, cache), preset="instdisc", out_dir=out, force=True)
    moved, path3, _ = run_protocol("knn", _tiny_ctx(other_root, cache), preset="instdisc", out_dir=out, force=True)
    assert first["inputs"]["imagenet/val"]["cache_hit"] is False and again["inputs"]["imagenet/val"]["cache_hit"]
    assert moved["dataset"]["root"] != first["dataset"]["root"]
    assert path1 == path2 == path3 and len(list((out / "runs").glob("*.json"))) == 1
    assert first["run_id"] == again["run_id"] == moved["run_id"] and path1.stem.endswith("__" + first["run_id"])
    assert first["fingerprint"] == again["fingerprint"] == moved["fingerprint"]
    assert first["metrics"] == moved["metrics"]
    # a different backbone (other weights identity) is another run
    other, path4, _ = run_protocol("knn", _tiny_ctx(mini_root, cache, "test:tiny-conv-other"), preset="instdisc",
                                   out_dir=out)
    assert other["run_id"] != first["run_id"] and path4 != path1
    assert other["fingerprint"] == first["fingerprint"], "the settings fingerprint leaves the weights out"


def _features(folder, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for split, n in (("train", 40), ("val", 12)):
        np.savez(folder / f"{split}.npz", features=rng.normal(size=(n, 6)).astype("float32"),
                 labels=rng.integers(0, 3, n))
    return folder


def test_other_weights_or_a_changed_preset_value_give_another_id(tmp_path):
    from bench.cli import main
    a, b = _features(tmp_path / "a", 0), _features(tmp_path / "b", 1)
    out = tmp_path / "out"
    base = ["run", "--protocol", "knn", "--preset", "instdisc", "--out", str(out)]
    for args in (["--features", str(a)], ["--features", str(b)], ["--features", str(a), "--set", "temperature=0.05"],
                 ["--features", str(a)]):
        assert main(base + args) == 0
    recs = {p.name: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    assert len(recs) == 3, "the fourth run repeats the first: same record"
    ids = [r["run_id"] for r in recs.values()]
    assert len(set(ids)) == 3 and all(name.endswith(f"__{r['run_id']}.json") for name, r in recs.items())
    assert all(record_run_id(r) == r["run_id"] == run_id(r["run_key"]) for r in recs.values())


def test_records_written_before_run_ids_get_the_id_their_key_would_have_now():
    key = {"protocol": "knn", "preset": "dino", "source": "file:abc", "dataset": "imagenet", "seed": 0}
    old = {"run_key": {**key, "data_root": "/somewhere/mini"}, "dataset": {"name": "imagenet", "mini": True}}
    assert record_run_id(old) == run_id({**key, "mini": True})
    assert record_run_id({**old, "run_key": {**key, "data_root": "/elsewhere"}}) == record_run_id(old)


def test_path_options_enter_the_run_key_by_content_not_location(tmp_path):
    from bench.runner import _stable_options
    a, b, c = tmp_path / "a" / "subset.txt", tmp_path / "b" / "subset.txt", tmp_path / "c.txt"
    for path, text in ((a, "n01440764_1.JPEG\n"), (b, "n01440764_1.JPEG\n"), (c, "n01443537_2.JPEG\n")):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    opts = {"labels_percent": None, "fraction": None}
    assert _stable_options({**opts, "subset_file": str(a)}) == _stable_options({**opts, "subset_file": str(b)})
    assert _stable_options({**opts, "subset_file": str(a)}) != _stable_options({**opts, "subset_file": str(c)})
    assert _stable_options({"distractors": str(tmp_path / "a")}) == {"distractors": "folder:a"}
    assert _stable_options(opts) == opts
