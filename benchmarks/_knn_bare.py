"""The limit for benchmarks/knn_cli_vs_bare.py: load the two .npz files, L2-normalise, and per 1024 test rows one
matmul against all training rows, one topk(max k) and DINO's weighted vote for every k. Nothing else."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

feats, ks, T = sys.argv[1], (10, 20, 100, 200), 0.07
with np.load(f"{feats}/train.npz") as z:
    xtr, ytr = torch.from_numpy(z["features"]), torch.from_numpy(z["labels"])
with np.load(f"{feats}/val.npz") as z:
    xte, yte = torch.from_numpy(z["features"]), torch.from_numpy(z["labels"])
xtr, xte = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
c = int(max(ytr.max(), yte.max())) + 1
hits = {k: 0 for k in ks}
for s in range(0, len(xte), 1024):
    sims, idx = (xte[s:s + 1024] @ xtr.T).topk(max(ks), dim=1)
    w, lab, y = (sims / T).exp(), ytr[idx], yte[s:s + 1024]
    for k in ks:
        scores = torch.zeros(len(w), c).scatter_add_(1, lab[:, :k], w[:, :k])
        hits[k] += int((scores.argmax(1) == y).sum())
print({k: 100 * h / len(xte) for k, h in hits.items()})
