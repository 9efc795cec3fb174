"""bench's k-NN (one top-max(k) search, every k read from it) against scikit-learn and DINO's loop.

- scikit-learn: KNeighborsClassifier(metric="cosine", algorithm="brute", weights=exp(s/T)) fitted once,
  `predict` once per k (its natural use; it recomputes the neighbours each call).
- the straightforward chunked loop: facebookresearch/dino eval_knn.py `knn_classifier` (transcribed in
  tests/test_knn.py), called once per k: 100 test chunks, each a full chunk × train similarity, top-k, vote.
Prints the time of each and the ratios. All three give the same top-1 (checked here, too).

    python benchmarks/knn_vs_baselines.py --train 20000 --test 2000 --dim 384 --classes 100
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

# run from a checkout without installing: this repository's bench, not another installed copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _util import best_time, machine  # noqa: E402

KS = (10, 20, 100, 200)
T = 0.07


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=100)
    args = p.parse_args()
    from sklearn.neighbors import KNeighborsClassifier
    from test_knn import dino_knn_classifier

    from bench.protocols.knn import knn_evaluate

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(args.classes, args.dim))
    ytr, yte = rng.integers(0, args.classes, args.train), rng.integers(0, args.classes, args.test)
    xtr = (centers[ytr] + 3 * rng.normal(size=(args.train, args.dim))).astype(np.float32)
    xte = (centers[yte] + 3 * rng.normal(size=(args.test, args.dim))).astype(np.float32)
    ntr = torch.nn.functional.normalize(torch.from_numpy(xtr), dim=1)
    nte = torch.nn.functional.normalize(torch.from_numpy(xte), dim=1)

    results = {}

    def ours():
        results["bench"] = knn_evaluate(xtr, ytr, xte, yte, ks=KS, temperature=T, num_classes=args.classes,
                                        backend="torch")

    def dino():
        results["dino"] = {k: dino_knn_classifier(ntr, torch.from_numpy(ytr), nte, torch.from_numpy(yte), k, T,
                                                  args.classes) for k in KS}

    def sklearn():
        out = {}
        for k in KS:
            clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                       weights=lambda d: np.exp((1 - d) / T)).fit(xtr, ytr)
            out[k] = float((clf.predict(xte) == yte).mean() * 100)
        results["sklearn"] = out

    t_ours, t_dino, t_sk = best_time(ours, 3), best_time(dino, 3), best_time(sklearn, 1)
    for k in KS:
        assert abs(results["bench"][k][0] - results["dino"][k][0]) < 1e-6
        assert abs(results["bench"][k][0] - results["sklearn"][k]) < 0.2  # float64 vs float32 near-ties
    print(f"machine: {machine()}")
    print(f"{args.train} train × {args.test} test × {args.dim}-d, {args.classes} classes, k ∈ {KS}")
    print(f"bench k-NN                 : {t_ours:7.3f} s")
    print(f"chunked loop (DINO), per k : {t_dino:7.3f} s   ratio {t_dino / t_ours:5.2f}× slower than bench")
    print(f"scikit-learn               : {t_sk:7.3f} s   ratio {t_sk / t_ours:5.2f}× slower than bench")


if __name__ == "__main__":
    main()
