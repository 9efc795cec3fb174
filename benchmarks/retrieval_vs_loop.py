"""bench's vectorised retrieval mAP against revisitop's per-query Python loop, on a synthetic ROxford-shaped problem.

    python3 benchmarks/retrieval_vs_loop.py                        # 70 queries × 5,000 database images
    python3 benchmarks/retrieval_vs_loop.py --db 50000

Reference: the loop-for-loop transcription of filipradenovic/revisitop:python/evaluate.py `compute_map` kept in
tests/test_retrieval.py (per query: positions of the positives in the ranked list, shifted up past the junk ranked
above them, trapezoidal AP), called as revisitop's example_evaluate.py does: once per setup with
`ok`/`junk` built from easy/hard/junk (E, M, H), and once for the original protocol with ok = good ∪ ok (every
listed name is in this synthetic database and good, ok are disjoint, so this is also compute_ap.cpp's count).
bench: `bench.metrics.retrieval.retrieval_map` — what the protocol's `retrieval_metrics` calls — on the same
revisitop `ranks` array, all setups in one call. `--rank-of` times bench from its own ranking output
(`rank_of`, what `rank_of_database` returns) instead. Asserts every mAP and mP@k agrees to 1e-9 and prints the
time of each side and the ratio. The ranking itself (the similarity sort) is not timed on either side.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# run from a checkout without installing: this repository's bench, not another installed copy
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _util import best_time, limit_threads, machine  # noqa: E402

KAPPAS = (1, 5, 10)


def synthetic_gnd(nq: int, n_db: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """revisitop-format ground truth (easy/hard/junk index arrays, a bbx) and `ranks` (n_db × nq, revisitop's layout).

    Sizes follow ROxford5k (tens of easy/hard/junk per query); positives score higher on average than the rest,
    so the APs spread over (0, 1) instead of sitting at chance. One query has no easy image (E excludes it).
    """
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(nq, n_db))
    gnd = []
    for q in range(nq):
        ids = rng.permutation(n_db)
        n_easy, n_hard, n_junk = (0 if q == 5 else int(rng.integers(1, 60))), int(rng.integers(1, 80)), \
            int(rng.integers(0, 60))
        easy, hard = ids[:n_easy], ids[n_easy:n_easy + n_hard]
        junk = ids[n_easy + n_hard:n_easy + n_hard + n_junk]
        scores[q, easy] += 2.5
        scores[q, hard] += 1.5
        scores[q, junk] += 1.0
        gnd.append({"bbx": [0.0, 0.0, 10.0, 10.0], "easy": easy, "hard": hard, "junk": junk})
    ranks = np.argsort(-scores, axis=1).T            # revisitop: ranks[:, q] = database ids in ranked order
    return np.ascontiguousarray(ranks), gnd


def reference(ranks: np.ndarray, gnd: list[dict], revisited: bool) -> dict[str, float]:
    """revisitop example_evaluate.py: build ok/junk per setup, call compute_map (the per-query loop)."""
    from tests.test_retrieval import ref_compute_map
    from bench.metrics.retrieval import REVISITED_SETUPS
    setups = REVISITED_SETUPS if revisited else {"": (("good", "ok"), ("junk",))}
    out = {}
    for setup, (pos_keys, junk_keys) in setups.items():
        g = [{"ok": np.concatenate([x[k] for k in pos_keys]), "junk": np.concatenate([x[k] for k in junk_keys])}
             for x in gnd]
        m, _, pr, _ = ref_compute_map(ranks, g, list(KAPPAS))
        suffix = f"_{setup}" if setup else ""
        out[f"mAP{suffix}"] = m
        out.update({f"mP@{k}{suffix}": float(p) for k, p in zip(KAPPAS, pr)})
    return out


def ours(ranks: np.ndarray, gnd: list[dict], revisited: bool, rank_of: np.ndarray | None) -> dict[str, float]:
    from bench.metrics.retrieval import ORIGINAL_SETUP, REVISITED_SETUPS, retrieval_map
    given = {"ranks": ranks} if rank_of is None else {"rank_of": rank_of}
    res = retrieval_map(gnd, REVISITED_SETUPS if revisited else ORIGINAL_SETUP, KAPPAS, cpp_original=not revisited,
                        **given)
    out = {}
    for setup, (m, _, pr, _) in res.items():
        suffix = f"_{setup}" if setup else ""
        out[f"mAP{suffix}"] = m
        out.update({f"mP@{k}{suffix}": float(p) for k, p in zip(KAPPAS, pr)})
    return out


def compare(name: str, ranks: np.ndarray, gnd: list[dict], revisited: bool, repeats: int,
            rank_of: np.ndarray | None) -> None:
    got = {}
    t_ref = best_time(lambda: got.__setitem__("ref", reference(ranks, gnd, revisited)), repeats)
    t_ours = best_time(lambda: got.__setitem__("bench", ours(ranks, gnd, revisited, rank_of)), repeats)
    ref, bench = got["ref"], got["bench"]
    assert ref.keys() == bench.keys(), (ref.keys(), bench.keys())
    worst = max(abs(ref[k] - bench[k]) for k in ref)
    assert worst <= 1e-9, f"{name}: bench and the revisitop loop disagree by {worst:g}"
    maps = "  ".join(f"{k} {100 * v:.2f}" for k, v in bench.items() if k.startswith("mAP"))
    print(f"{name:9s}: {maps}  (max |bench − loop| over mAP and mP@{KAPPAS} = {worst:.1e})")
    print(f"           revisitop loop {t_ref * 1e3:9.1f} ms   bench {t_ours * 1e3:8.1f} ms   "
          f"ratio {t_ref / t_ours:6.1f}× faster")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=70)
    p.add_argument("--db", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1; both sides are numpy)")
    p.add_argument("--rank-of", action="store_true", help="bench starts from rank_of (its ranking's output)")
    a = p.parse_args()
    limit_threads(a.threads)
    ranks, gnd = synthetic_gnd(a.queries, a.db, seed=0)
    original = [{"bbx": g["bbx"], "good": g["easy"], "ok": g["hard"], "junk": g["junk"]} for g in gnd]
    print(f"machine: {machine()}; {a.threads} thread(s)")
    print(f"{a.queries} queries × {a.db} database images, kappas {KAPPAS}; bench from "
          f"{'rank_of' if a.rank_of else 'ranks'}")
    rank_of = None
    if a.rank_of:
        from bench.metrics.retrieval import ranks_to_rank_of
        rank_of = ranks_to_rank_of(ranks)
    compare("revisited", ranks, gnd, True, a.repeats, rank_of)
    compare("original", ranks, original, False, a.repeats, rank_of)


if __name__ == "__main__":
    main()
