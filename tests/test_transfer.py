"""The 12-dataset transfer protocol: splits, readers of the list-based datasets, skipping, records."""
import json
import shutil

import numpy as np
import pytest

from bench.cli import main
from bench.data import open_dataset
from bench.errors import DataError
from bench.protocols.transfer import TRANSFER_DATASETS, holdout_split, select_and_evaluate


def _record(out):
    recs = sorted((out / "runs").glob("*.json"))
    assert len(recs) == 1
    return json.loads(recs[0].read_text())


def test_holdout_reproduces_ssl_transfer_get_train_valid_loader():
    # linusericsson/ssl-transfer:linear.py: indices = list(range(n)); np.random.seed(seed); np.random.shuffle;
    # split = floor(valid_size * n); train = indices[split:], valid = indices[:split]
    n, seed = 97, 0
    indices = list(range(n))
    np.random.seed(seed)
    np.random.shuffle(indices)
    split = int(np.floor(0.2 * n))
    train, val = holdout_split(n, split, seed)
    assert set(val) == set(indices[:split]) and set(train) == set(indices[split:])


def _blobs(n, rng, k=4, d=6):
    y = rng.integers(0, k, n)
    return rng.normal(size=(n, d)) + 2.5 * np.eye(k, d)[y], y


def test_lambda_is_chosen_on_val_only_and_refit_on_train_plus_val():
    rng = np.random.default_rng(0)
    train, val, test = _blobs(60, rng), _blobs(40, rng), _blobs(50, rng)
    lambdas = np.logspace(-3, 3, 3)
    res = select_and_evaluate(train, val, test, metric="top1", lambdas=lambdas, num_classes=4, max_iter=50)
    curve = dict((round(lam, 9), s) for lam, s in res["val_curve"])
    best = max(curve.values())
    assert res["val"] == best and curve[round(res["lambda"], 9)] == best
    assert res["lambda"] == pytest.approx(min(lam for lam, s in curve.items() if s == best))  # ties: smallest λ
    scrambled = (test[0], rng.permutation(test[1]))
    res2 = select_and_evaluate(train, val, scrambled, metric="top1", lambdas=lambdas, num_classes=4, max_iter=50)
    assert res2["lambda"] == res["lambda"] and res2["val_curve"] == res["val_curve"]   # test never selects
    assert res["test"] > 70 > res2["test"]


def test_ssl_transfer_voc_fit_is_its_two_class_softmax_at_half_the_binary_C():
    """ssl-transfer fits each VOC class with sklearn LogisticRegression(multi_class='multinomial') on its 0/1
    column: a 2-class softmax, objective C·Σ CE + ½(‖w₀‖² + ‖w₁‖²), intercepts unpenalised. Minimised here with
    scipy from that formula; bench's binary fit at 2C must be w = w₁ − w₀, b = b₁ − b₀ (at C it is not)."""
    from scipy.optimize import minimize

    from bench.protocols.logreg import fit_logreg_ovr
    rng = np.random.default_rng(5)
    n, d, C = 80, 4, 0.3
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.7 * rng.normal(size=n) > 0.2).astype(int)

    def objective(theta):
        W, b = theta[:2 * d].reshape(2, d), theta[2 * d:]
        z = x @ W.T + b
        lse = np.logaddexp(z[:, 0], z[:, 1])
        p = np.exp(z - lse[:, None])
        p[np.arange(n), y] -= 1
        value = C * (lse - z[np.arange(n), y]).sum() + 0.5 * (W ** 2).sum()
        return value, np.concatenate([(C * p.T @ x + W).ravel(), C * p.sum(0)])
    theta = minimize(objective, np.zeros(2 * d + 2), jac=True, method="L-BFGS-B",
                     options={"gtol": 1e-12, "ftol": 0, "maxiter": 10000}).x
    W, b = theta[:2 * d].reshape(2, d), theta[2 * d:]
    ours = fit_logreg_ovr(x, y[:, None].astype(float), 2 * C)
    np.testing.assert_allclose(ours.W[:, 0].numpy(), W[1] - W[0], atol=1e-5)
    assert float(ours.b[0]) == pytest.approx(b[1] - b[0], abs=1e-5)
    assert np.abs(fit_logreg_ovr(x, y[:, None].astype(float), C).W[:, 0].numpy() - (W[1] - W[0])).max() > 1e-2


def test_voc07_definition_reaches_the_fit_and_the_metric():
    """ssl-transfer: difficult images are negatives in the fit, the binary fit runs at 2C (C reported as
    sklearn's), AP by its definition; the devkit definition masks them and scores otherwise."""
    from bench.metrics.transfer import voc07_mean_ap
    from bench.protocols.logreg import fit_logreg_ovr, predict_scores
    rng = np.random.default_rng(3)

    def split(n):
        y = rng.choice([1, -1, -1, -1, 0], size=(n, 3))
        y[:3] = np.eye(3) * 2 - 1                    # every class has a positive
        return rng.normal(size=(n, 5)) + 0.8 * np.pad(y > 0, ((0, 0), (0, 2))), y
    train, val, test = split(60), split(40), split(60)
    lambdas = np.logspace(-2, 2, 3)
    kw = dict(metric="mAP_11pt", lambdas=lambdas, num_classes=20, max_iter=300)
    ssl = select_and_evaluate(train, val, test, voc07_definition="ssl-transfer", recall_grid="numpy", **kw)
    assert ssl["C"] in set(1.0 / lambdas) and ssl["lambda"] == pytest.approx(1.0 / ssl["C"])
    x_tv, y_tv = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    w = fit_logreg_ovr(x_tv, (y_tv == 1).astype(float), 2 * ssl["C"], max_iter=300)
    expected = voc07_mean_ap(predict_scores(w, test[0]).numpy(), test[1], "ssl-transfer", "numpy")[0]
    assert ssl["test"] == pytest.approx(expected, abs=1e-6)
    devkit = select_and_evaluate(train, val, test, **kw)
    w = fit_logreg_ovr(x_tv, (y_tv > 0).astype(float), devkit["C"], mask=y_tv != 0, max_iter=300)
    assert devkit["test"] == pytest.approx(voc07_mean_ap(predict_scores(w, test[0]).numpy(), test[1])[0], abs=1e-6)
    assert devkit["test"] != pytest.approx(ssl["test"])


def test_voc_labels_from_xml_equal_devkit_class_files(tmp_path):
    from bench.data.transfer_lists import VOC_CLASSES, voc_labels
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    objects = {"000001": [("person", 0), ("dog", 1)], "000002": [("dog", 0), ("dog", 1), ("cat", 1)]}
    (voc / "Annotations").mkdir(parents=True)
    for image_id, objs in objects.items():
        body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult></object>" for n, d in objs)
        (voc / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
    ids = list(objects)
    from_xml = voc_labels(voc, "val", ids)
    expected = np.full((2, 20), -1)
    expected[0, VOC_CLASSES.index("person")] = 1
    expected[0, VOC_CLASSES.index("dog")] = 0                # only a difficult dog → ignored, not negative
    expected[1, VOC_CLASSES.index("dog")] = 1                # one non-difficult dog is enough
    expected[1, VOC_CLASSES.index("cat")] = 0
    np.testing.assert_array_equal(from_xml, expected)
    main_dir = voc / "ImageSets" / "Main"
    main_dir.mkdir(parents=True)
    for c, name in enumerate(VOC_CLASSES):                   # the devkit's files say the same
        (main_dir / f"{name}_val.txt").write_text("".join(f"{i} {expected[r, c]:2d}\n" for r, i in enumerate(ids)))
    np.testing.assert_array_equal(voc_labels(voc, "val", ids), expected)


def test_sun397_partition_and_birdsnap_missing_images(tmp_path):
    sun = tmp_path / "SUN397"
    (sun / "Partitions").mkdir(parents=True)
    (sun / "ClassName.txt").write_text("/a/abbey\n/b/beach\n")
    for rel in ("a/abbey/sun_1.jpg", "b/beach/sun_2.jpg", "b/beach/sun_3.jpg"):
        (sun / rel).parent.mkdir(parents=True, exist_ok=True)
        (sun / rel).touch()
    (sun / "Partitions" / "Training_01.txt").write_text("/a/abbey/sun_1.jpg\n/b/beach/sun_2.jpg\n")
    (sun / "Partitions" / "Testing_01.txt").write_text("/b/beach/sun_3.jpg\n")
    tr = open_dataset("sun397", tmp_path, "trainval", None, mini=True)
    assert [f.name for f in tr.files] == ["sun_1.jpg", "sun_2.jpg"] and tr.labels == [0, 1]
    assert open_dataset("sun397", tmp_path, "test", None, mini=True).labels == [1]
    with pytest.raises(DataError, match="expected 19850"):
        open_dataset("sun397", tmp_path, "trainval", None, mini=False)
    bird = tmp_path / "birdsnap"
    bird.mkdir()
    paths = ["Acadian_Flycatcher/0.jpg", "Acadian_Flycatcher/1.jpg", "Bald_Eagle/2.jpg", "Bald_Eagle/3.jpg"]
    (bird / "images.txt").write_text("url\tmd5\tpath\tspecies_id\n" + "".join(f"u\tm\t{p}\t1\n" for p in paths))
    (bird / "test_images.txt").write_text("path\nBald_Eagle/3.jpg\n")
    for p in paths[:2] + paths[3:]:                          # Bald_Eagle/2.jpg failed to download
        (bird / "download" / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        (bird / "download" / "images" / p).touch()
    tr = open_dataset("birdsnap", tmp_path, "trainval", None)
    assert len(tr) == 2 and tr.missing == 1 and tr.labels == [0, 0]
    te = open_dataset("birdsnap", tmp_path, "test", None)
    assert len(te) == 1 and te.missing == 0 and te.labels == [1]


def test_caltech_keeps_background_and_draws_30_per_class(mini_root):
    tv = open_dataset("caltech101", mini_root, "trainval", None, mini=True)
    te = open_dataset("caltech101", mini_root, "test", None, mini=True)
    assert "BACKGROUND_Google" in tv.dataset.classes
    targets = np.asarray(tv.dataset.targets)
    assert np.bincount(targets[tv.indices]).tolist() == [30] * len(tv.dataset.classes)
    assert not set(tv.indices) & set(te.indices) and len(tv) + len(te) == len(tv.dataset)


def test_partial_download_fails_its_manifest(mini_root, tmp_path):
    shutil.copytree(mini_root / "dtd", tmp_path / "dtd")     # no BENCH_MINI.json: treated as the real dataset
    with pytest.raises(DataError, match="expected 1880"):
        open_dataset("dtd", tmp_path, "train", None)


def test_quick_run_skips_a_dataset_with_a_missing_split(mini_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(mini_root, root)
    (root / "dtd" / "dtd" / "labels" / "test1.txt").unlink()
    out = tmp_path / "results"
    assert main(["run", "--protocol", "transfer", "--data-root", str(root), "--quick", "--out", str(out),
                 "--model", "resnet18", "--datasets", "dtd,pets"]) == 0
    rec = _record(out)
    assert set(rec["metrics"]) == {"pets", "mean"} and rec["metrics"]["mean"] == rec["metrics"]["pets"]
    assert "test1.txt" in rec["details"]["skipped"]["dtd"]
    assert rec["details"]["mean_over"] == ["pets"]
    assert set(rec["dataset"]["counts"]) == {"pets/trainval", "pets/test"} and rec["dataset"]["name"] == "transfer"
    assert rec["metrics"]["pets"] > 15, "better than chance (8 classes: 12.5%) on the digit miniature"
    pets = rec["details"]["datasets"]["pets"]
    assert pets["n_train"] + pets["n_val"] == 64 and pets["n_val"] == 12     # ssl-transfer: floor(0.2 · 64)
    assert rec["comparable"] is False


def test_features_dir_runs_without_a_backbone_and_lists_what_is_missing(tmp_path):
    rng = np.random.default_rng(1)
    feats = tmp_path / "feats"
    for name, splits in (("cifar10", ("trainval", "test")), ("flowers102", ("train", "val", "test"))):
        (feats / name).mkdir(parents=True)
        for split in splits:
            x, y = _blobs(50, rng)
            np.savez(feats / name / f"{split}.npz", features=x.astype(np.float32), labels=y)
    out = tmp_path / "results"
    assert main(["run", "--protocol", "transfer", "--features", str(feats), "--quick", "--out", str(out)]) == 0
    rec = _record(out)
    assert set(rec["metrics"]) == {"cifar10", "flowers102", "mean"}
    assert set(rec["details"]["skipped"]) == set(TRANSFER_DATASETS) - {"cifar10", "flowers102"}
    assert rec["metrics"]["mean"] == pytest.approx((rec["metrics"]["cifar10"] + rec["metrics"]["flowers102"]) / 2)
    assert rec["details"]["datasets"]["flowers102"]["validation"].startswith("official val")


def test_finetune_preset_is_registered_but_refuses_to_run(tmp_path, capsys):
    assert main(["run", "--protocol", "transfer", "--preset", "finetune-simclr", "--features", str(tmp_path),
                 "--out", str(tmp_path / "r")]) == 2
    assert "not implemented in this version" in capsys.readouterr().err


def test_unknown_dataset_name_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--protocol", "transfer", "--features", str(tmp_path), "--datasets", "imagenet",
                 "--out", str(tmp_path / "r")]) == 2
    assert "unknown ['imagenet']" in capsys.readouterr().err
