"""Robustness: mCE / relative mCE / flip probability / top-5 distance / mFR worked by hand or transcribed from
hendrycks/robustness, the 200-class restriction of ImageNet-A/-R, a linear head saved with its record and
evaluated again, and the command line on the miniatures down to the table row."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.metrics.robustness import (ALEXNET_ERR, CORRUPTIONS, corruption_errors, flip_probability,
                                      mean_flip_rate, top5_distance)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mce_worked_by_hand():
    errors = {"gaussian_noise": [0.5, 0.6, 0.7, 0.8, 0.9], "brightness": [0.1, 0.1, 0.2, 0.2, 0.4]}
    # CE_gauss = (0.5+0.6+0.7+0.8+0.9) / (5 × 0.886428) = 3.5 / 4.43214 = 0.789686...
    # CE_bright = (0.1+0.1+0.2+0.2+0.4) / (5 × 0.564592) = 1.0 / 2.82296 = 0.354238...
    ce_g, ce_b = 3.5 / 4.43214, 1.0 / 2.82296
    # relative, clean error 0.05, AlexNet clean 0.435: (Σ E − 5×0.05) / (Σ E_alex − 5×0.435)
    rel_g, rel_b = (3.5 - 0.25) / (4.43214 - 2.175), (1.0 - 0.25) / (2.82296 - 2.175)
    out = corruption_errors(errors, clean_error=0.05)
    assert out["CE_gaussian_noise"] == pytest.approx(100 * ce_g)
    assert out["mCE"] == pytest.approx(100 * (ce_g + ce_b) / 2)
    assert out["relative_mCE"] == pytest.approx(100 * (rel_g + rel_b) / 2)
    assert out["mean_error"] == pytest.approx(100 * (0.7 + 0.2) / 2)   # test.py's "mCE (unnormalized)"


def test_alexnet_scores_mce_100_over_all_15():
    errors = {c: [ALEXNET_ERR[c]] * 5 for c in CORRUPTIONS}
    assert len(ALEXNET_ERR) == 15
    assert corruption_errors(errors)["mCE"] == pytest.approx(100.0)
    # a corruption without an AlexNet error (the validation extras) does not enter mCE, only the raw mean
    out = corruption_errors({**errors, "spatter": [1.0] * 5})
    assert out["mCE"] == pytest.approx(100.0) and out["mean_error"] > 100 * np.mean(list(ALEXNET_ERR.values()))


def test_flip_probability_and_mfr_worked_by_hand():
    videos = [[3, 3, 4, 4, 3], [1, 2, 1, 1, 1]]
    # consecutive (non-noise): video 1 flips at 3→4, 4→3 = 2/4; video 2 at 1→2, 2→1 = 2/4 → 0.5
    assert flip_probability(videos, noise=False) == pytest.approx(0.5)
    # vs the first frame (noise): video 1 differs at frames 3,4 = 2/4; video 2 at frame 2 = 1/4 → 0.375
    assert flip_probability(videos, noise=True) == pytest.approx(0.375)
    fr = mean_flip_rate({"translate": 0.5, "gaussian_noise": 0.375}, {"translate": 0.25, "gaussian_noise": 0.5})
    assert fr["FR_translate"] == pytest.approx(200.0) and fr["FR_gaussian_noise"] == pytest.approx(75.0)
    assert fr["mFR"] == pytest.approx(137.5)
    assert "mFR" not in mean_flip_rate({"translate": 0.5}, {})


def _reference_ranking_dist(ranks, noise):
    """ImageNet-P/test.py `ranking_dist(mode='top5')` at difficulty 1, transcribed (n classes instead of 1000)."""
    n = ranks[0].shape[1]
    cum_sum_top5 = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (n - 1 - 5)))

    def dist(sigma):
        return np.sum(np.abs(cum_sum_top5[:5] - cum_sum_top5[sigma - 1][:5]))
    result = 0
    for vid_ranks in ranks:
        out = []
        perm1 = vid_ranks[0]
        perm1_inv = np.argsort(perm1)
        for rank in vid_ranks[1:]:
            out.append(dist(rank[perm1_inv]))
            if not noise:
                perm1, perm1_inv = rank, np.argsort(rank)
        result += np.mean(out) / len(ranks)
    return result


def test_top5_distance_matches_the_reference_transcription():
    from scipy.stats import rankdata
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 12))   # 3 videos, 7 frames, 12 classes
    logits[:, 1:] += 0.3 * rng.normal(size=(3, 6, 12))
    ranks = [np.stack([rankdata(-f, method="ordinal").astype(int) for f in v]) for v in logits]
    for noise in (True, False):
        assert top5_distance(ranks, noise) == pytest.approx(_reference_ranking_dist(ranks, noise))
    # identical frames: distance 0; top-1 and top-2 swapped: |0-1| + |1-0| = 2
    same = [np.stack([np.arange(1, 13)] * 3)]
    assert top5_distance(same, False) == 0
    swapped = [np.stack([np.arange(1, 13), np.r_[2, 1, np.arange(3, 13)]])]
    assert top5_distance(swapped, False) == 2


def test_restriction_to_the_200_classes_matches_hendrycks_indexing():
    from bench.protocols.robustness import restrict
    from timm.data import ImageNetInfo
    import timm.data
    all_wnids = list(ImageNetInfo().label_names())
    r_wnids = (Path(timm.data.__file__).parent / "_info" / "imagenet_r_synsets.txt").read_text().split()
    assert len(r_wnids) == 200
    keep = [all_wnids.index(w) for w in sorted(r_wnids)]
    torch.manual_seed(0)
    logits = torch.randn(64, 1000)
    outside = [i for i in range(1000) if i not in set(keep)][:64]
    logits[torch.arange(64), torch.tensor(outside)] = 10.0   # every global argmax lies outside the subset
    ours = restrict(logits, keep).argmax(1)
    # imagenet-r eval.py: output[:, imagenet_r_mask].argmax(1) indexes the 200 (sorted) wnids
    theirs = torch.tensor(keep)[logits[:, keep].argmax(1)]
    assert torch.equal(ours, theirs) and not torch.equal(ours, logits.argmax(1))


def _tiny_backbone():
    from bench.backbones import Backbone, LoadReport, Preprocessing
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten()).eval()
    return Backbone(model, LoadReport(source="random", arch="tiny", library="test", family="random",
                                      feature_mode="pool"), Preprocessing(), weights_id="test:tiny-conv-robustness")


def _ctx(mini_root, cache, backbone, **kw):
    from bench.data import DataRoot
    from bench.runner import RunContext
    return RunContext(dataset="imagenet", data_root=DataRoot(mini_root, mini=True, origin="test"), backbone=backbone,
                      resolution=32, cache_dir=cache, quick=True, batch_size=64, **kw)


def test_linear_head_saved_with_its_record_is_evaluated_again(mini_root, tmp_path):
    from safetensors.torch import load_file
    from torchvision.datasets import ImageFolder

    from bench.data import build_eval_transform, TransformSpec
    from bench.runner import run_protocol
    bb = _tiny_backbone()
    overrides = {"quick_epochs": 2, "quick_batch_size": 64, "quick_train_images": 256}
    lin, lin_path, _ = run_protocol("linear", _ctx(mini_root, tmp_path / "c", bb), preset="mocov2",
                                    overrides=overrides, out_dir=tmp_path / "o")
    block = lin["details"]["classifier"]
    assert block["kind"] == "linear" and Path(block["path"]).is_file() and len(block["classes"]) == 10
    ctx = _ctx(mini_root, tmp_path / "c", bb, options={"classifier": str(lin_path),
                                                          "classifier_results": str(tmp_path / "o")})
    rec, _, _ = run_protocol("robustness", ctx, overrides={"datasets": ["imagenet_a"]}, out_dir=tmp_path / "o")
    # independently: the saved head on the backbone's pooled features, Hendrycks' indexing over the set's wnids
    head = nn.Linear(8, 10)
    head.load_state_dict(load_file(block["path"]))
    tf = build_eval_transform(TransformSpec(**block["eval_transform"]))
    folder = ImageFolder(str(mini_root / "imagenet-a"), transform=tf)   # labels 0..4 over its own 5 wnids
    keep = [block["classes"].index(w) for w in folder.classes]
    x = torch.stack([folder[i][0] for i in range(len(folder))])
    y = torch.tensor(folder.targets)
    with torch.no_grad():
        out = head(bb.model(x))[:, keep]                                  # natural-adv-examples: indices_in_1k
    assert len(folder) <= 64   # under the --quick cap: every image is scored
    expected = float((out.argmax(1) == y).float().mean() * 100)
    assert rec["metrics"]["imagenet_a:top1"] == pytest.approx(expected)
    assert rec["details"]["classifier"]["kind"] == "linear"
    # all of val (no --quick cap) through the saved head and the linear run's eval transform: its final top-1 again
    full = _ctx(mini_root, tmp_path / "c", bb, options=ctx.options)
    full.quick = False
    clean, _, _ = run_protocol("robustness", full, overrides={"datasets": []}, out_dir=tmp_path / "o")
    assert clean["metrics"]["imagenet:top1"] == pytest.approx(lin["metrics"]["top1"])
    # a classifier trained on another backbone is refused
    other = _tiny_backbone()
    other.weights_id = "test:another"
    from bench.errors import BenchError
    with pytest.raises(BenchError, match="trained on backbone"):
        run_protocol("robustness", _ctx(mini_root, tmp_path / "c", other, options=ctx.options),
                     overrides={"datasets": ["imagenet_a"]}, out_dir=tmp_path / "o2")


def test_command_line_on_the_miniatures_fills_the_tables(mini_root, tmp_path):
    from conftest import run_cli
    out = tmp_path / "res"
    assert run_cli("run", "--protocol", "robustness", "--model", "resnet18", "--classifier", "own", "--quick",
                   "--data-root", mini_root, "--out", out, "--resolution", "32") == 0
    rec = next((out / "runs").glob("robustness__*.json")).read_text()
    for key in ("imagenet_a:top1", "imagenet_r:top1", "imagenet_sketch:top1", "imagenetv2:top1", "imagenet_c:mCE",
                "imagenet_c:relative_mCE", "imagenet_p:mFP", "imagenet_p:mT5D_raw"):
        assert f'"{key}"' in rec
    assert run_cli("table", "--results", out, "--no-plots") == 0
    for ds, col in (("imagenet_a", "top1"), ("imagenet_c", "mCE"), ("imagenet_p", "mFP")):
        text = (out / f"robustness__{ds}.md").read_text()
        assert "| noisy_student_robustness | NoisyStudent |" in text   # the documented rows beside it
        header = next(line for line in text.splitlines() if line.startswith("| source"))
        row = next(line for line in text.splitlines() if line.startswith("| measured"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert col in header and cells[[c.strip() for c in header.strip("|").split("|")].index(col)] != ""


def test_bad_robustness_inputs_name_the_file(tmp_path):
    from bench.data.robustness import open_videos, open_wnid_folder
    from bench.errors import DataError
    (tmp_path / "p" / "n00000001").mkdir(parents=True)
    (tmp_path / "p" / "n00000001" / "seq.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="seq.mp4"):
        open_videos(tmp_path / "p", ["n00000000", "n00000001"], lambda im: im)[0]
    from PIL import Image
    (tmp_path / "a" / "n00000001").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "n00000001" / "x.jpg")
    with pytest.raises(DataError, match="n00000001: class n00000001 is not one of the classifier's 1 classes"):
        open_wnid_folder(tmp_path / "a", ["n00000000"], None, "ImageNet-A")


# ---- mFR normalised by a measured AlexNet (--alexnet-record) ------------------------------------------------------

def _tv_alexnet_file(path: Path, num_classes: int) -> Path:
    """A torchvision AlexNet state dict in torchvision's own layout (as alexnet-owt-7be5be79.pth), random weights.
    Seed 1: with torch's default init most seeds give a head that predicts one class for every frame of the
    miniature (flip probability 0, refused as a normaliser); the test checks that this one does not."""
    import torchvision
    torch.manual_seed(1)
    torch.save(torchvision.models.alexnet(num_classes=num_classes).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def alexnet_and_model_records(mini_root, tmp_path_factory):
    from conftest import run_cli
    out = tmp_path_factory.mktemp("mfr")
    n = sum(1 for p in (mini_root / "imagenet" / "train").iterdir() if p.is_dir())
    ckpt = _tv_alexnet_file(out / "alexnet-owt.pth", n)
    common = ("--classifier", "own", "--quick", "--data-root", mini_root, "--resolution", "64",
              "--set", "datasets=[imagenet_p]", "--set", "clean=false")
    assert run_cli("run", "--protocol", "robustness", "--model", "tv:alexnet", "--ckpt", ckpt, *common,
                   "--out", out / "alex") == 0
    alex = next((out / "alex" / "runs").glob("robustness__*.json"))
    assert run_cli("run", "--protocol", "robustness", "--model", "resnet18", *common, "--alexnet-record", alex,
                   "--out", out / "model") == 0
    return alex, next((out / "model" / "runs").glob("robustness__*.json")), out


def test_mfr_from_a_measured_alexnet_record_is_the_mean_ratio_of_the_two_records(alexnet_and_model_records):
    import json
    alex_path, model_path, out = alexnet_and_model_records
    alex, model = json.loads(alex_path.read_text()), json.loads(model_path.read_text())
    assert alex["checkpoint"]["layout"] == "torchvision-alexnet-vgg" and alex["checkpoint"]["coverage_pct"] == 100.0
    fa, fm = alex["details"]["imagenet_p_flip_prob"], model["details"]["imagenet_p_flip_prob"]
    assert set(fa) == set(fm) and len(fa) >= 3 and all(v > 0 for v in fa.values())
    expected = sum(100 * fm[p] / fa[p] for p in fm) / len(fm)          # Hendrycks & Dietterich: mean_p FP/FP_AlexNet
    assert model["metrics"]["imagenet_p:mFR"] == pytest.approx(expected, rel=1e-9)
    norm = model["details"]["imagenet_p_mFR_normaliser"]
    assert norm["source"] == "measured by bench" and norm["record"] == alex["run_id"]
    assert norm["flip_prob"] == fa
    # the normaliser enters the run key by content, not by where the file lies
    assert model["run_key"]["options"]["alexnet_record"].startswith("sha256:")
    from conftest import run_cli
    assert run_cli("table", "--results", out / "model", "--no-plots") == 0
    text = (out / "model" / "robustness__imagenet_p.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| source"))
    row = next(line for line in text.splitlines() if line.startswith("| measured"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert [c.strip() for c in row.strip("|").split("|")][cols.index("mFR")] == f"{expected:.2f}"


def test_bad_alexnet_records_are_one_line_errors_naming_the_file(alexnet_and_model_records, tmp_path):
    import json
    from types import SimpleNamespace
    from bench.errors import BenchError
    from bench.protocols.robustness import RobustnessPreset, alexnet_flip_probs
    alex_path, model_path, _ = alexnet_and_model_records
    alex = json.loads(alex_path.read_text())
    measured = {p: 0.1 for p in alex["details"]["imagenet_p_flip_prob"]}

    def check(rec, match, *, mini=True, quick=True, preset=RobustnessPreset()):
        path = tmp_path / "alex.json"
        if rec is not None:
            path.write_text(json.dumps(rec) if isinstance(rec, dict) else rec)
        ctx = SimpleNamespace(options={"alexnet_record": str(path)}, mini=mini, quick=quick, seed=alex["seed"])
        with pytest.raises(BenchError, match=match) as e:
            alexnet_flip_probs(ctx, preset, measured)
        assert "\n" not in str(e.value) and str(path) in str(e.value) or "twice" in str(e.value)

    check(None, "AlexNet record not found")
    check("{ not json", "not a readable record")
    check({**alex, "protocol": "linear"}, "not a robustness record")
    check(json.loads(model_path.read_text()), "a record of resnet18, not AlexNet")
    check({**alex, "checkpoint": {**alex["checkpoint"], "family": "random"}}, "random-init AlexNet", mini=False,
          quick=False)
    check(alex, "measured on other sequences", quick=False)
    fp = dict(alex["details"]["imagenet_p_flip_prob"])
    gone = sorted(fp)[0]
    check({**alex, "details": {"imagenet_p_flip_prob": {k: v for k, v in fp.items() if k != gone}}},
          f"no AlexNet flip probability for {gone}")
    check({**alex, "details": {"imagenet_p_flip_prob": {**fp, gone: 0.0}}}, f"is 0 for {gone}")
    check(alex, "given twice", preset=RobustnessPreset(alexnet_flip_prob={gone: 0.5}))


def test_tampered_alexnet_records_are_one_line_errors(alexnet_and_model_records, tmp_path):
    """Issue 33: a tampered --alexnet-record (fields of the wrong type, non-finite or out-of-range flip
    probabilities, not UTF-8, nested thousands deep) is refused in one line naming the file, never a traceback."""
    import json
    from types import SimpleNamespace
    from bench.errors import BenchError
    from bench.protocols.robustness import RobustnessPreset, alexnet_flip_probs
    alex_path, _, _ = alexnet_and_model_records
    alex = json.loads(alex_path.read_text())
    fp = dict(alex["details"]["imagenet_p_flip_prob"])
    measured = {p: 0.1 for p in fp}
    one = sorted(fp)[0]
    variants = {"checkpoint list": {**alex, "checkpoint": ["alexnet"]},
                "run_key string": {**alex, "run_key": "mini"},
                "details list": {**alex, "details": [1]},
                "flip probs list": {**alex, "details": {"imagenet_p_flip_prob": [1, 2]}},
                "flip prob text": {**alex, "details": {"imagenet_p_flip_prob": {**fp, one: "5"}}},
                "flip prob Infinity": {**alex, "details": {"imagenet_p_flip_prob": {**fp, one: float("inf")}}},
                "flip prob NaN": {**alex, "details": {"imagenet_p_flip_prob": {**fp, one: float("nan")}}},
                "flip prob 1000": {**alex, "details": {"imagenet_p_flip_prob": {**fp, one: 1000.0}}},
                "arch number": {**alex, "checkpoint": {**alex["checkpoint"], "arch": 5}}}
    raw = {"not UTF-8": b'{"protocol": "\xff"}', "deep": b"[" * 5000 + b"]" * 5000}
    for name, content in [*((n, json.dumps(v).encode()) for n, v in variants.items()), *raw.items()]:
        path = tmp_path / f"{name}.json"
        path.write_bytes(content)
        ctx = SimpleNamespace(options={"alexnet_record": str(path)}, mini=True, quick=True, seed=alex["seed"])
        with pytest.raises(BenchError) as e:
            alexnet_flip_probs(ctx, RobustnessPreset(), measured)
        assert "\n" not in str(e.value) and str(e.value).startswith(str(path)), name
