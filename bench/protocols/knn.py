"""Weighted k-NN classification on frozen features (Wu et al. 2018; DINO `eval_knn.py`).

Reference code: facebookresearch/dino:eval_knn.py (`knn_classifier`). Features are L2-normalised; each test
sample takes its top-k training neighbours by cosine similarity and scores class c as Σ exp(s_i / T)·[y_i = c].
Top-1/top-5 are read from the scores sorted in descending order. Train and test features use the same
deterministic transform (DINO: Resize 256 bicubic + CenterCrop 224). Nothing is tuned, so no split selects
anything: k and T are fixed by the preset. The top-max(k) neighbours are found once and every k reads from them.

Memory: the test set is processed in chunks and, inside each chunk, the training set too (running top-k merge),
so 1.28M × 2048 training features never need to sit on one device at once. faiss does the search when installed
and the preset asks for it (`backend: auto|faiss`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BenchError
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["KnnPreset", "knn_topk_neighbors", "knn_scores", "knn_evaluate"]


@dataclass(frozen=True)
class KnnPreset:
    k: tuple[int, ...] = (10, 20, 100, 200)
    headline_k: int = 20
    temperature: float = 0.07
    train_split: str = "train"
    eval_split: str = "val"
    transform: dict = field(default_factory=lambda: {"resize": 256, "crop": 224, "interpolation": "bicubic"})
    feature_mode: str | None = None        # None: the backbone family's own feature (CLS / pooled)
    normalize: bool = True
    backend: str = "auto"                  # auto: faiss if installed, else torch; or "torch" / "faiss"
    test_chunk: int = 1024
    train_chunk: int = 262_144
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.headline_k not in self.k:
            raise ValueError(f"headline_k={self.headline_k} must be one of k={self.k}")
        if self.temperature <= 0 or min(self.k) < 1:
            raise ValueError("temperature must be > 0 and every k ≥ 1")
        check_choices(self, backend=("auto", "torch", "faiss"))


def _faiss():
    try:
        import faiss
        return faiss
    except ImportError:
        return None


def knn_topk_neighbors(train: torch.Tensor, test: torch.Tensor, k: int, *, train_chunk: int = 262_144,
                       backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of the k most similar training rows for each test row, sorted descending."""
    k = min(k, train.shape[0])
    if backend == "faiss":
        faiss = _faiss()
        index = faiss.IndexFlatIP(train.shape[1])
        index.add(np.ascontiguousarray(train.cpu().numpy(), dtype=np.float32))
        sims, idx = index.search(np.ascontiguousarray(test.cpu().numpy(), dtype=np.float32), k)
        return torch.from_numpy(sims), torch.from_numpy(idx)
    best_s = best_i = None
    for start in range(0, train.shape[0], train_chunk):
        block = train[start:start + train_chunk].to(test.device, non_blocking=True)
        s, i = (test @ block.T).topk(min(k, block.shape[0]), dim=1)
        i = i + start
        if best_s is None:
            best_s, best_i = s, i
        else:
            s, order = torch.cat([best_s, s], 1).topk(k, dim=1)
            best_s, best_i = s, torch.cat([best_i, i], 1).gather(1, order)
    return best_s, best_i


def knn_scores(sims: torch.Tensor, neighbor_labels: torch.Tensor, k: int, temperature: float,
               num_classes: int) -> torch.Tensor:
    """Σ_{i ≤ k} exp(s_i / T)·onehot(y_i): the class scores of DINO's weighted vote, (n_test, num_classes)."""
    weights = (sims[:, :k] / temperature).exp()
    return torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype, device=sims.device).scatter_add_(
        1, neighbor_labels[:, :k], weights)


def knn_evaluate(train_features, train_labels, test_features, test_labels, *, ks=(10, 20, 100, 200),
                 temperature: float = 0.07, num_classes: int | None = None, normalize: bool = True,
                 test_chunk: int = 1024, train_chunk: int = 262_144, backend: str = "torch",
                 device: str | torch.device = "cpu") -> dict[int, tuple[float, float]]:
    """{k: (top1 %, top5 %)} for every k, from one top-max(k) search per test chunk."""
    device = torch.device(device)
    train = torch.as_tensor(train_features, dtype=torch.float32)
    test = torch.as_tensor(test_features, dtype=torch.float32)
    ytrain = torch.as_tensor(train_labels, dtype=torch.long).to(device)
    ytest = torch.as_tensor(test_labels, dtype=torch.long)
    if normalize:
        train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    num_classes = num_classes or int(max(ytrain.max(), ytest.max())) + 1
    kmax = max(ks)
    hits = {k: [0, 0] for k in ks}
    for start in range(0, test.shape[0], test_chunk):
        q = test[start:start + test_chunk].to(device)
        y = ytest[start:start + test_chunk].to(device)
        sims, idx = knn_topk_neighbors(train, q, kmax, train_chunk=train_chunk, backend=backend)
        sims, idx = sims.to(device), idx.to(device)
        neighbor_labels = ytrain[idx]
        for k in ks:
            scores = knn_scores(sims, neighbor_labels, k, temperature, num_classes)
            _, order = scores.sort(1, True)   # the same call as DINO, so ties break the same way
            correct = order.eq(y.view(-1, 1))
            hits[k][0] += int(correct[:, :1].sum())
            hits[k][1] += int(correct[:, :min(5, k, num_classes)].sum())
    n = test.shape[0]
    return {k: (100.0 * h1 / n, 100.0 * h5 / n) for k, (h1, h5) in hits.items()}


@register_protocol("knn", preset_cls=KnnPreset)
def run_knn(ctx, preset: KnnPreset) -> ProtocolResult:
    """Weighted k-NN on L2-normalised frozen features (DINO eval_knn.py)."""
    train = ctx.features(preset.train_split, preset.transform, feature_mode=preset.feature_mode)
    test = ctx.features(preset.eval_split, preset.transform, feature_mode=preset.feature_mode)
    if train.labels.ndim != 1:
        raise BenchError("k-NN needs single-label targets; this dataset is multi-label")
    backend = preset.backend
    if backend == "auto":
        backend = "faiss" if _faiss() is not None else "torch"
    elif backend == "faiss" and _faiss() is None:
        raise BenchError("preset asks for backend faiss but faiss is not installed; pip install faiss-cpu "
                         "(or faiss-gpu), or --set backend=torch")
    res = knn_evaluate(train.features, train.labels, test.features, test.labels, ks=preset.k,
                       temperature=preset.temperature, normalize=preset.normalize, test_chunk=preset.test_chunk,
                       train_chunk=preset.train_chunk, backend=backend, device=ctx.device,
                       num_classes=ctx.num_classes(train.labels, test.labels))
    metrics = {"top1": res[preset.headline_k][0], "top5": res[preset.headline_k][1]}
    for k, (t1, t5) in sorted(res.items()):
        metrics[f"top1_k{k}"], metrics[f"top5_k{k}"] = t1, t5
    return ProtocolResult(metrics, details={"backend": backend, "headline_k": preset.headline_k,
                                            "n_train": len(train), "n_test": len(test)},
                          headline=("top1", "top5"))
