"""Retrieval: revisitop's compute_map transcribed independently, R-MAC regions vs deepcluster, chunked distractor
ranking vs a full sort, the safe gnd loader, and end-to-end runs on the miniatures."""
import json
import pickle

import numpy as np
import pytest

from bench.errors import DataError
from bench.metrics.retrieval import REVISITED_SETUPS, compute_map, gnd_masks, map_from_rank_of, ranks_to_rank_of
from tests.conftest import run_cli


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest


# ---- transcription of filipradenovic/revisitop:python/evaluate.py (kept loop-for-loop) ----
def ref_compute_ap(ranks, nres):
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1. / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.
    return ap


def ref_compute_map(ranks, gnd, kappas=[]):
    map = 0.
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = gnd[i]['ok']
        if qgnd.shape[0] == 0:
            aps[i] = float('nan')
            prs[i, :] = float('nan')
            nempty += 1
            continue
        try:
            qgndj = gnd[i]['junk']
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while (ip < len(pos)):
                while (ij < len(junk) and pos[ip] > junk[ij]):
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = ref_compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs


def _random_problem(seed, n_db=300, nq=25):
    rng = np.random.default_rng(seed)
    ranks = np.stack([rng.permutation(n_db) for _ in range(nq)], axis=1)       # n_db × nq, like revisitop
    gnd = []
    for q in range(nq):
        ids = rng.permutation(n_db)
        n_easy, n_hard, n_junk = rng.integers(0, 15, 3)
        if q == 3:
            n_easy = n_hard = 0                                                 # a query without positives
        gnd.append({"easy": ids[:n_easy], "hard": ids[n_easy:n_easy + n_hard],
                    "junk": ids[n_easy + n_hard:n_easy + n_hard + n_junk]})
    return ranks, gnd


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("setup", ["E", "M", "H"])
def test_map_matches_revisitop_transcription(seed, setup):
    ranks, gnd = _random_problem(seed)
    pos_keys, junk_keys = REVISITED_SETUPS[setup]
    g = [{"ok": np.concatenate([x[k] for k in pos_keys]), "junk": np.concatenate([x[k] for k in junk_keys])}
         for x in gnd]
    ref = ref_compute_map(ranks, g, [1, 5, 10])
    ours = compute_map(ranks, g, [1, 5, 10])
    assert ours[0] == pytest.approx(ref[0], abs=1e-6)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-6)       # NaN at the query without positives in both
    np.testing.assert_allclose(ours[2], ref[2], atol=1e-6)
    np.testing.assert_allclose(ours[3], ref[3], atol=1e-6)
    assert np.isnan(ours[1][3]) and 0.0 < ours[0] < 1.0
    # the same through the mask API used by the protocol
    pos, junk, n_pos = gnd_masks(gnd, ranks.shape[0], pos_keys, junk_keys)
    assert map_from_rank_of(ranks_to_rank_of(ranks), pos, junk, (1, 5, 10), n_pos)[0] == pytest.approx(ref[0], abs=1e-6)


def test_hand_worked_ap_with_junk():
    # ranking: P J N P (positives at 0 and 3, junk at 1) → after junk removal positives at 0 and 2:
    # AP = ½[(1 + 1)/2 + (1/2 + 2/3)/2] = ½[1 + 7/12] = 19/24.
    ranks = np.array([[2], [0], [3], [1]])     # db images 2, 0, 3, 1 in ranked order
    m, aps, pr, _ = compute_map(ranks, [{"ok": np.array([2, 1]), "junk": np.array([0])}], [1, 5])
    assert m == pytest.approx(19 / 24)
    assert pr == pytest.approx([1.0, 2 / 3])   # P@5 divides by min(5, last positive's rank 3)


def test_rank_of_with_distractors_equals_full_sort():
    from bench.protocols.retrieval import rank_of_database
    rng = np.random.default_rng(0)
    n = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    q, db, dis = n(rng.normal(size=(7, 16))), n(rng.normal(size=(50, 16))), n(rng.normal(size=(333, 16)))
    ours = rank_of_database(q.astype(np.float32), db.astype(np.float32), dis.astype(np.float32), chunk=40)
    full = np.concatenate([db, dis]).astype(np.float32)
    order = np.argsort(-(q.astype(np.float32) @ full.T), axis=1, kind="stable")
    expect = np.argsort(order, axis=1)[:, :50]       # position of each database image in the full ranking
    np.testing.assert_array_equal(ours, expect)


def ref_rmac_regions(H, W, L):
    """Transcribed from facebookresearch/deepcluster eval_retrieval.py get_rmac_region_coordinates."""
    ovr = 0.4
    steps = np.array((2, 3, 4, 5, 6, 7), dtype=np.float32)
    w = np.minimum(H, W)
    b = (np.maximum(H, W) - w) / (steps - 1)
    idx = np.argmin(np.abs(((w**2 - w * b) / w**2) - ovr)) + 1
    Wd = Hd = 0
    if H < W:
        Wd = idx
    elif H > W:
        Hd = idx
    regions_xywh = []
    for l in range(1, L + 1):  # noqa: E741
        wl = np.floor(2 * w / (l + 1))
        wl2 = np.floor(wl / 2 - 1)
        b = (W - wl) / (l + Wd - 1) if l + Wd - 1 > 0 else 0
        cenW = np.floor(wl2 + b * np.arange(l - 1 + Wd + 1)) - wl2
        b = (H - wl) / (l + Hd - 1) if l + Hd - 1 > 0 else 0
        cenH = np.floor(wl2 + b * np.arange(l - 1 + Hd + 1)) - wl2
        for i_ in cenH:
            for j_ in cenW:
                regions_xywh.append([j_, i_, wl, wl])
    for i in range(len(regions_xywh)):
        for j in range(4):
            regions_xywh[i][j] = int(round(regions_xywh[i][j]))
        if regions_xywh[i][0] + regions_xywh[i][2] > W:
            regions_xywh[i][0] -= ((regions_xywh[i][0] + regions_xywh[i][2]) - W)
        if regions_xywh[i][1] + regions_xywh[i][3] > H:
            regions_xywh[i][1] -= ((regions_xywh[i][1] + regions_xywh[i][3]) - H)
    return np.array(regions_xywh)


@pytest.mark.parametrize("hw", [(32, 24), (24, 32), (20, 20), (64, 48), (3, 4), (37, 50)])
def test_rmac_regions_match_deepcluster(hw):
    from bench.protocols._retrieval_extract import rmac_regions
    np.testing.assert_array_equal(rmac_regions(*hw, 3), ref_rmac_regions(*hw, 3))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_hostile_gnd_pickle_is_refused(tmp_path):
    from bench.data.retrieval import safe_load_gnd
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [_Evil()]}))
    with pytest.raises(DataError, match="gnd_roxford5k.pkl"):
        safe_load_gnd(path)
    ok = {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [1.0, 2.0, 3.0, 4.0], "easy": np.array([0]),
                                                     "hard": np.array([], np.int64), "junk": [np.int64(0)]}]}
    path.write_bytes(pickle.dumps(ok))
    assert safe_load_gnd(path)["gnd"][0]["easy"].tolist() == [0]


def _record(out):
    return json.loads(next((out / "runs").glob("*.json")).read_text())


def test_mini_runs_revisited_and_original_from_images(mini_root, tmp_path):
    out = tmp_path / "res"
    assert run_cli("run", "--protocol", "retrieval", "--model", "test_resnet", "--quick", "--data-root", mini_root,
                   "--out", out) == 0
    rec = _record(out)
    assert set(rec["metrics"]) >= {"mAP_E", "mAP_M", "mAP_H", "mP@1_M", "mP@5_H", "mP@10_E"}
    assert rec["details"]["whitening"]["learned_on"] == "rparis6k"
    assert rec["dataset"]["counts"] == {"roxford5k/query": 12, "roxford5k/db": 84, "rparis6k/db": 84}
    out2 = tmp_path / "res2"
    assert run_cli("run", "--protocol", "retrieval", "--preset", "deepcluster", "--dataset", "oxford5k",
                   "--model", "test_resnet", "--quick", "--data-root", mini_root, "--out", out2) == 0
    rec = _record(out2)
    assert set(rec["metrics"]) == {"mAP", "mP@1", "mP@5", "mP@10"} and rec["headline"] == ["mAP"]
    assert rec["details"]["whitening"]["kind"] == "regional" and rec["details"]["n_db"] == 96


def test_dino_preset_on_vit_uses_per_dataset_settings(mini_root, tmp_path):
    out = tmp_path / "res"
    assert run_cli("run", "--protocol", "retrieval", "--preset", "dino", "--dataset", "rparis6k", "--model",
                   "test_vit", "--quick", "--data-root", mini_root, "--out", out) == 0
    eff = _record(out)["details"]["effective_preset"]
    assert eff["scales"] == [1.0, 0.7071067811865476, 0.5] and eff["query_crop"] == "none"


def test_features_dir_and_distractors(tmp_path):
    """A planted problem: each query's positives are its near copies (mAP 100); two distractors equal to each query
    push its positives down by exactly two ranks; whitening reads whiten.npz."""
    rng = np.random.default_rng(0)
    nq, per, dim = 4, 3, 8
    centres = rng.normal(size=(nq, dim))
    db = np.concatenate([centres[i] + 0.05 * rng.normal(size=(per, dim)) for i in range(nq)] +
                        [rng.normal(size=(20, dim))]).astype(np.float32)
    gnd = [{"bbx": None, "easy": np.arange(i * per, i * per + 2), "hard": np.array([i * per + 2]),
            "junk": np.array([], np.int64)} for i in range(nq)]
    d = tmp_path / "feats"
    d.mkdir()
    np.savez(d / "query.npz", features=centres.astype(np.float32))
    np.savez(d / "db.npz", features=db)
    (d / "gnd.pkl").write_bytes(pickle.dumps({"imlist": [f"d{i}" for i in range(len(db))],
                                              "qimlist": [f"q{i}" for i in range(nq)], "gnd": gnd}))
    np.savez(tmp_path / "near.npz", features=np.repeat(centres, 2, axis=0).astype(np.float32))
    base = ["run", "--protocol", "retrieval", "--preset", "dino", "--features", d]
    assert run_cli(*base, "--out", tmp_path / "a") == 0
    assert _record(tmp_path / "a")["metrics"]["mAP_M"] == pytest.approx(100.0)
    assert run_cli(*base, "--out", tmp_path / "b", "--distractors", tmp_path / "near.npz") == 0
    rec = _record(tmp_path / "b")
    # each query's 2 identical distractors rank first, its 3 positives at ranks 2, 3, 4 (hand-worked trapezoids)
    ap = np.mean([(0 + 1 / 3) / 2, (1 / 3 + 2 / 4) / 2, (2 / 4 + 3 / 5) / 2])
    assert rec["metrics"]["mAP_M"] == pytest.approx(100 * ap) and rec["details"]["n_distractors"] == 8

    np.savez(d / "whiten.npz", features=rng.normal(size=(40, dim)).astype(np.float32))
    assert run_cli(*base, "--out", tmp_path / "d", "--set", "whiten=global", "--set", "whiten_dim=4") == 0
    assert _record(tmp_path / "d")["details"]["whitening"] == {"learned_on": "whiten.npz", "dim": 4,
                                                               "n_train_vectors": 40, "kind": "global",
                                                               "rank_deficient": False}
    # 6 vectors of 8 dimensions: the record says the whitening is rank-deficient
    np.savez(d / "whiten.npz", features=rng.normal(size=(6, dim)).astype(np.float32))
    assert run_cli(*base, "--out", tmp_path / "e", "--set", "whiten=global") == 0
    assert _record(tmp_path / "e")["details"]["whitening"]["rank_deficient"] is True
    (d / "whiten.npz").unlink()
    assert run_cli(*base, "--out", tmp_path / "c", "--set", "whiten=global") == 2   # no whiten.npz: one-line error
    from bench.protocols.retrieval import _features_from_dir, RetrievalPreset
    from bench.runner import RunContext
    with pytest.raises(DataError, match="whiten.npz"):
        _features_from_dir(RunContext(dataset="roxford5k", features_dir=d), RetrievalPreset(whiten="global"))


def test_query_crop_before_and_after_resize():
    from PIL import Image

    from bench.protocols._retrieval_extract import ImagePrep
    img = Image.new("RGB", (200, 100))
    bbx = (20.0, 10.0, 120.0, 62.0)
    # revisitop: crop the 100×52 box first, then max side 50 → 50×26
    assert ImagePrep(50, query_crop="before_resize")(img, bbx).shape == (3, 26, 50)
    # deepcluster: resize to 50×25 (ratio 1/4), box scaled and rounded → x 5..30, y 2..16 (np.round(15.5) = 16)
    assert ImagePrep(50, query_crop="after_resize")(img, bbx).shape == (3, 14, 25)
    # dino: thumbnail never enlarges, and the query is not cropped
    assert ImagePrep(400, resize="thumbnail", query_crop="none")(img, bbx).shape == (3, 100, 200)


def test_vit_any_size_path_equals_plain_forward_at_native_size():
    import torch

    from bench.backbones import load_backbone
    from bench.protocols._retrieval_extract import Descriptor, _vit_tokens, describe
    model = load_backbone(None, "test_vit").model
    size = model.patch_embed.img_size
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        tokens, h, w = _vit_tokens(model, x)
        torch.testing.assert_close(tokens, model.forward_features(x))
        assert (h, w) == model.patch_embed.grid_size
        # a non-multiple size runs (extra pixels dropped like DINO's strided patch conv) and is unit-norm
        v = describe(model, torch.randn(1, 3, size[0] + 5, size[1] + 21), Descriptor("cls"))
    assert v.shape == (1, model.embed_dim) and torch.linalg.norm(v).item() == pytest.approx(1.0, abs=1e-5)
