"""k-NN against an independent transcription of DINO's `knn_classifier` and a hand-worked example."""
import numpy as np
import pytest
import torch

from bench.protocols.knn import knn_evaluate, knn_scores


def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes):
    """Transcribed from facebookresearch/dino eval_knn.py (features already L2-normalised)."""
    top1, top5, total = 0.0, 0.0, 0
    train_features = train_features.t()
    num_test_images, num_chunks = test_labels.shape[0], 100
    imgs_per_chunk = num_test_images // num_chunks
    retrieval_one_hot = torch.zeros(k, num_classes)
    for idx in range(0, num_test_images, imgs_per_chunk):
        features = test_features[idx: min((idx + imgs_per_chunk), num_test_images), :]
        targets = test_labels[idx: min((idx + imgs_per_chunk), num_test_images)]
        batch_size = targets.shape[0]
        similarity = torch.mm(features, train_features)
        distances, indices = similarity.topk(k, largest=True, sorted=True)
        candidates = train_labels.view(1, -1).expand(batch_size, -1)
        retrieved_neighbors = torch.gather(candidates, 1, indices)
        retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
        retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
        distances_transform = distances.clone().div_(T).exp_()
        probs = torch.sum(torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes),
                                    distances_transform.view(batch_size, -1, 1)), 1)
        _, predictions = probs.sort(1, True)
        correct = predictions.eq(targets.data.view(-1, 1))
        top1 = top1 + correct.narrow(1, 0, 1).sum().item()
        top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()
        total += targets.size(0)
    return top1 * 100.0 / total, top5 * 100.0 / total


def _clustered(n, dim, classes, rng, noise=1.5):
    """Train and test drawn around the same class centres (a seeded problem of moderate difficulty)."""
    centers = np.random.default_rng(123).normal(size=(classes, dim))
    y = rng.integers(0, classes, size=n)
    return (centers[y] + noise * rng.normal(size=(n, dim))).astype(np.float32), y


@pytest.mark.parametrize("k", [1, 10, 20, 100])
def test_matches_dino_knn_classifier(k):
    rng = np.random.default_rng(0)
    xtr, ytr = _clustered(600, 32, 12, rng)
    xte, yte = _clustered(300, 32, 12, rng)
    ours = knn_evaluate(xtr, ytr, xte, yte, ks=(k,), temperature=0.07, num_classes=12, test_chunk=64,
                        train_chunk=128)[k]
    n = torch.nn.functional.normalize
    ref = dino_knn_classifier(n(torch.tensor(xtr), dim=1), torch.tensor(ytr), n(torch.tensor(xte), dim=1),
                              torch.tensor(yte), k, 0.07, 12)
    assert ours[0] == pytest.approx(ref[0], abs=1e-9)
    assert ours[1] == pytest.approx(ref[1], abs=1e-9)
    assert 20 < ours[0] < 100  # the problem is neither trivial nor hopeless, so the comparison means something


def test_all_k_from_one_search_equal_separate_runs():
    rng = np.random.default_rng(1)
    xtr, ytr = _clustered(400, 16, 8, rng)
    xte, yte = _clustered(150, 16, 8, rng)
    together = knn_evaluate(xtr, ytr, xte, yte, ks=(5, 20, 50), test_chunk=1000, train_chunk=10**6)
    for k in (5, 20, 50):
        assert together[k] == knn_evaluate(xtr, ytr, xte, yte, ks=(k,), test_chunk=7, train_chunk=33)[k]


def test_hand_worked_weighted_vote():
    # neighbours with cosine 0.9 (class 1), 0.8 (class 0), 0.7 (class 0); T = 0.1:
    # class 0: e^8 + e^7 = 4077.6; class 1: e^9 = 8103.1 → class 1 wins with k = 3; with k = 2 also class 1.
    sims = torch.tensor([[0.9, 0.8, 0.7]])
    labels = torch.tensor([[1, 0, 0]])
    scores = knn_scores(sims, labels, 3, 0.1, 2)
    assert scores[0, 0].item() == pytest.approx(np.exp(8) + np.exp(7), rel=1e-5)
    assert scores[0, 1].item() == pytest.approx(np.exp(9), rel=1e-5)
    # at T = 1 the two close class-0 neighbours outvote: e^.8 + e^.7 = 4.23 > e^.9 = 2.46
    assert knn_scores(sims, labels, 3, 1.0, 2).argmax().item() == 0


def test_exact_top1_on_a_tiny_set():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    ytr = np.array([0, 0, 1, 1])
    test = np.array([[1, 0.05], [0.05, 1], [0.2, 1]], dtype=np.float32)
    yte = np.array([0, 1, 0])  # the last one is mislabelled on purpose: top-1 must be 2/3
    res = knn_evaluate(train, ytr, test, yte, ks=(2,), temperature=0.07)
    assert res[2][0] == pytest.approx(200 / 3)
    assert res[2][1] == pytest.approx(100.0)  # two classes: the label is always in the top 5


def test_faiss_backend_matches_torch():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    xtr, ytr = _clustered(300, 16, 5, rng)
    xte, yte = _clustered(100, 16, 5, rng)
    assert knn_evaluate(xtr, ytr, xte, yte, ks=(10,), backend="faiss") == \
        knn_evaluate(xtr, ytr, xte, yte, ks=(10,), backend="torch")
