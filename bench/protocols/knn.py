"""Weighted k-NN classification on frozen features (Wu et al. 2018; DINO `eval_knn.py`).

Reference code: facebookresearch/dino:eval_knn.py (`knn_classifier`). Features are L2-normalised; each test
sample takes its top-k training neighbours by cosine similarity and scores class c as Σ exp(s_i / T)·[y_i = c].
Top-1/top-5 are read from the scores sorted in descending order. Train and test features use the same
deterministic transform (DINO: Resize 256 bicubic + CenterCrop 224). Nothing is tuned, so no split selects
anything: k and T are fixed by the preset. The top-max(k) neighbours are found once and every k reads from them
(the class scores of k are those of the previous k plus the neighbours in between, added in the same order).

Ties, defined so that the result never depends on chunk sizes, the backend's selection algorithm or k:
- neighbours are ordered by (similarity descending, training index ascending). DINO takes whatever
  `torch.topk(k)` returns, which among exactly equal similarities is unspecified and changes with k and the row
  length; the two agree whenever no tie straddles the k-th neighbour, and bench's choice is the one a stable sort
  makes;
- classes with equal scores are ordered by class index, which is what DINO's `probs.sort(1, True)` does on the
  CPU (torch's CPU sort is stable). A test sample is top-n correct when fewer than n classes come before its label.

Memory and speed: the training set is streamed once in `train_chunk` rows (converted to float32 and normalised per
chunk, so fp16 features never get a float32 copy of the whole set), each chunk against every test chunk, with a
running top-max(k) merge; at most one test_chunk × train_chunk block of similarities exists. The default backend
is bench's own matmul + topk (`choose_backend`), the same lines on the CPU and a GPU: on the CPU it measured 2–4×
faster than faiss's flat index (benchmarks/knn_cli_vs_bare.py); faiss runs only when the preset asks for it
(`backend: faiss`), on the GPU (faiss-gpu's GpuIndexFlatIP) when faiss-gpu is installed and the device is a GPU,
and the record names the index. benchmarks/device_check.py times both against the bare matmul + topk on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BenchError
from ..metrics.bootstrap import mean_samples
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["KnnPreset", "knn_topk_neighbors", "knn_scores", "knn_evaluate", "choose_backend", "faiss_index_kind"]


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
    backend: str = "auto"                  # auto: the measured fastest for the device (choose_backend); torch; faiss
    test_chunk: int = 1024
    train_chunk: int = 65_536
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.headline_k not in self.k:
            raise ValueError(f"headline_k={self.headline_k} must be one of k={self.k}")
        if self.temperature <= 0 or min(self.k) < 1:
            raise ValueError("temperature must be > 0 and every k ≥ 1")
        if self.test_chunk < 1 or self.train_chunk < 1:
            raise ValueError("test_chunk and train_chunk must be ≥ 1")
        check_choices(self, backend=("auto", "torch", "faiss"))


def _faiss():
    try:
        import faiss
        return faiss
    except ImportError:
        return None


def choose_backend(requested: str, device: str | torch.device, faiss_available: bool) -> str:
    """The backend that runs: `auto` is torch on every device, since torch's matmul + topk measured 2–4× faster
    than faiss's IndexFlatIP on the CPU (docs/performance.md) and no faiss-gpu measurement says otherwise on a GPU.
    An explicit `faiss` needs faiss installed."""
    if requested == "faiss" and not faiss_available:
        raise BenchError("preset asks for backend faiss but faiss is not installed; pip install faiss-cpu "
                         "(or faiss-gpu), or --set backend=torch")
    return "torch" if requested == "auto" else requested


def _order_ties(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row of a descending (value, index) list by (value descending, index ascending).

    Only rows holding two equal values can be out of that order, so only those are sorted (two sorts of every
    row cost ~3% of a 50k × 10k search for nothing when, as usual, no similarity is repeated)."""
    tied = (v[:, 1:] == v[:, :-1]).any(dim=1)
    if not tied.any():
        return v, i
    rows = tied.nonzero()[:, 0]
    ri, o = i[rows].sort(dim=1)
    rv, o2 = v[rows].gather(1, o).sort(dim=1, descending=True, stable=True)
    v, i = v.clone(), i.clone()
    v[rows], i[rows] = rv, ri.gather(1, o2)
    return v, i


def _ordered_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of each row in (similarity descending, column ascending) order."""
    if k >= sims.shape[1]:
        v, i = sims.sort(dim=1, descending=True, stable=True)
        return v, i
    # one more than needed: the (k+1)-th is the best value left out, so a tie across the k-th place shows as
    # v[k] == v[k-1] at no extra pass over the block. topk's pick among such equal values is unspecified, so
    # those rows (rare outside duplicated features) are decided by a stable sort instead.
    v, i = sims.topk(k + 1, dim=1)
    straddles = v[:, k] == v[:, k - 1]
    v, i = v[:, :k], i[:, :k]
    if straddles.any():
        rows = straddles.nonzero()[:, 0]
        sv, si = sims[rows].sort(dim=1, descending=True, stable=True)
        v[rows], i[rows] = sv[:, :k], si[:, :k]
    return _order_ties(v, i)


def _merge(best: tuple | None, new: tuple, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two (value, index) lists in tie order whose indices in `best` all precede those in `new`."""
    if best is None:
        return new
    v, i = torch.cat([best[0], new[0]], 1), torch.cat([best[1], new[1]], 1)
    v, o = v.sort(dim=1, descending=True, stable=True)   # stable: earlier (lower) indices stay first among ties
    k = min(k, v.shape[1])
    return v[:, :k], i.gather(1, o[:, :k])


def _as_float32(rows) -> torch.Tensor:
    """float32 tensor of an array/tensor slice; a read-only memory map or a float16 array is copied here, one chunk
    at a time, never as a whole matrix."""
    if isinstance(rows, np.ndarray) and (rows.dtype != np.float32 or not rows.flags.writeable):
        rows = np.array(rows, dtype=np.float32)
    return torch.as_tensor(rows)


def _train_block(train, start: int, stop: int, device: torch.device, normalize: bool) -> torch.Tensor:
    rows = train[start:stop]
    if device.type != "cpu" and isinstance(rows, np.ndarray):
        rows = torch.from_numpy(np.array(rows))   # to the GPU in the stored dtype (fp16: half the bytes), cast there
    block = _as_float32(rows).to(device=device, dtype=torch.float32, non_blocking=True)
    return F.normalize(block, dim=1) if normalize else block


def faiss_index_kind(device: str | torch.device) -> str:
    """The flat inner-product index faiss uses on `device`: faiss-gpu's GpuIndexFlatIP when the query device is a
    GPU and the installed faiss has GPU support, else the CPU IndexFlatIP (the one device branch: a backend)."""
    faiss = _faiss()
    gpu = torch.device(device).type == "cuda" and faiss is not None and hasattr(faiss, "StandardGpuResources")
    return "GpuIndexFlatIP" if gpu else "IndexFlatIP"


def _faiss_topk(train, test: torch.Tensor, k: int, normalize: bool,
                train_chunk: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    faiss = _faiss()
    d = test.shape[1]
    if faiss_index_kind(test.device) == "GpuIndexFlatIP":
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = test.device.index or 0
        index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), d, cfg)
    else:
        index = faiss.IndexFlatIP(d)
    for start in range(0, len(train), train_chunk):   # added a chunk at a time: no float32 copy of the whole set
        index.add(np.ascontiguousarray(_train_block(train, start, start + train_chunk, torch.device("cpu"),
                                                    normalize).numpy()))
    sims, idx = index.search(np.ascontiguousarray(test.cpu().numpy(), dtype=np.float32), k)
    # boundary ties are faiss's choice; inside the list the order is bench's
    return _order_ties(torch.from_numpy(sims), torch.from_numpy(idx))


def knn_topk_neighbors(train, test: torch.Tensor, k: int, *, train_chunk: int = 65_536, test_chunk: int = 1024,
                       backend: str = "torch", normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of the k most similar training rows for each test row, in (similarity descending,
    training index ascending) order, on test's device. `train` (tensor or array, any float dtype) is read one
    `train_chunk` at a time and normalised per chunk when `normalize`; `test` is used as given."""
    n_train = len(train)
    k = min(k, n_train)
    if backend == "faiss":
        v, i = _faiss_topk(train, test, k, normalize, train_chunk)
        return v.to(test.device), i.to(test.device)
    best: list = [None] * -(-test.shape[0] // test_chunk)
    for start in range(0, n_train, train_chunk):
        stop = min(start + train_chunk, n_train)
        block = _train_block(train, start, stop, test.device, normalize)
        for c, t in enumerate(range(0, test.shape[0], test_chunk)):
            v, i = _ordered_topk(test[t:t + test_chunk] @ block.T, min(k, stop - start))
            best[c] = _merge(best[c], (v, i + start), k)
    if not best:
        return torch.zeros(0, k, device=test.device), torch.zeros(0, k, dtype=torch.long, device=test.device)
    return torch.cat([b[0] for b in best]), torch.cat([b[1] for b in best])


def knn_scores(sims: torch.Tensor, neighbor_labels: torch.Tensor, k: int, temperature: float,
               num_classes: int) -> torch.Tensor:
    """Σ_{i ≤ k} exp(s_i / T)·onehot(y_i): the class scores of DINO's weighted vote, (n_test, num_classes)."""
    weights = (sims[:, :k] / temperature).exp()
    return torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype, device=sims.device).scatter_add_(
        1, neighbor_labels[:, :k], weights)


def _label_rank(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many classes sort before the label in a stable descending sort of the scores (0 = top-1)."""
    s_true = scores.gather(1, y[:, None])
    before = torch.arange(scores.shape[1], device=scores.device)[None, :] < y[:, None]
    return (scores > s_true).sum(1) + ((scores == s_true) & before).sum(1)


def knn_evaluate(train_features, train_labels, test_features, test_labels, *, ks=(10, 20, 100, 200),
                 temperature: float = 0.07, num_classes: int | None = None, normalize: bool = True,
                 test_chunk: int = 1024, train_chunk: int = 65_536, backend: str = "torch",
                 device: str | torch.device = "cpu", per_sample: bool = False):
    """{k: (top1 %, top5 %)} for every k, from one top-max(k) search. With `per_sample`, also
    {k: (top-1 hit, top-5 hit)} as bool arrays over the test rows (what bootstrap intervals resample)."""
    device = torch.device(device)
    test = _as_float32(test_features).to(device=device, dtype=torch.float32)
    if normalize:
        test = F.normalize(test, dim=1)
    ytrain = torch.as_tensor(train_labels, dtype=torch.long).to(device)
    ytest = torch.as_tensor(test_labels, dtype=torch.long).to(device)
    num_classes = num_classes or int(max(ytrain.max(), ytest.max())) + 1
    sims, idx = knn_topk_neighbors(train_features, test, max(ks), train_chunk=train_chunk, test_chunk=test_chunk,
                                   backend=backend, normalize=normalize)
    hits = {k: [0, 0] for k in ks}
    rows: dict[int, tuple[list, list]] = {k: ([], []) for k in ks}
    for start in range(0, test.shape[0], test_chunk):
        s, y = sims[start:start + test_chunk], ytest[start:start + test_chunk]
        labels, weights = ytrain[idx[start:start + test_chunk]], (s / temperature).exp()
        scores = torch.zeros(len(s), num_classes, dtype=weights.dtype, device=device)
        done = 0
        for k in sorted(set(ks)):
            upto = min(k, s.shape[1])
            scores.scatter_add_(1, labels[:, done:upto], weights[:, done:upto])
            done = upto
            rank = _label_rank(scores, y)
            hits[k][0] += int((rank < 1).sum())
            hits[k][1] += int((rank < min(5, k)).sum())
            if per_sample:
                rows[k][0].append((rank < 1).cpu().numpy())
                rows[k][1].append((rank < min(5, k)).cpu().numpy())
    n = test.shape[0]
    res = {k: (100.0 * h1 / n, 100.0 * h5 / n) for k, (h1, h5) in hits.items()}
    if not per_sample:
        return res
    empty = np.zeros(0, dtype=bool)
    return res, {k: tuple(np.concatenate(r) if r else empty for r in rows[k]) for k in ks}


@register_protocol("knn", preset_cls=KnnPreset)
def run_knn(ctx, preset: KnnPreset) -> ProtocolResult:
    """Weighted k-NN on L2-normalised frozen features (DINO eval_knn.py)."""
    # memory-mapped: the training rows are streamed in train_chunk blocks and converted to float32 per block, so a
    # 1.28M × 1024 fp16 file is never held twice (nor once, beyond the page cache)
    train = ctx.features(preset.train_split, preset.transform, feature_mode=preset.feature_mode, mmap=True)
    test = ctx.features(preset.eval_split, preset.transform, feature_mode=preset.feature_mode, mmap=True)
    if train.labels.ndim != 1:
        raise BenchError("k-NN needs single-label targets; this dataset is multi-label")
    # importing faiss only when asked for: auto never runs it
    backend = choose_backend(preset.backend, ctx.device, preset.backend == "faiss" and _faiss() is not None)
    res, hits = knn_evaluate(train.features, train.labels, test.features, test.labels, ks=preset.k,
                             temperature=preset.temperature, normalize=preset.normalize,
                             test_chunk=preset.test_chunk, train_chunk=preset.train_chunk, backend=backend,
                             device=ctx.device, num_classes=ctx.num_classes(train.labels, test.labels),
                             per_sample=True)
    metrics = {"top1": res[preset.headline_k][0], "top5": res[preset.headline_k][1]}
    for k, (t1, t5) in sorted(res.items()):
        metrics[f"top1_k{k}"], metrics[f"top5_k{k}"] = t1, t5
    index = {"faiss_index": faiss_index_kind(ctx.device)} if backend == "faiss" else {}
    return ProtocolResult(metrics, details={"backend": backend, **index, "headline_k": preset.headline_k,
                                            "n_train": len(train), "n_test": len(test)},
                          headline=("top1", "top5"),
                          samples={"top1": mean_samples(hits[preset.headline_k][0]),
                                   "top5": mean_samples(hits[preset.headline_k][1])})
