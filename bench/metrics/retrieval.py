"""Instance-retrieval metrics: revisitop's mAP / mP@k (trapezoid AP with junk removed), vectorised over queries.

Reference: filipradenovic/revisitop:python/evaluate.py (`compute_ap`, `compute_map`). Decisions copied from it:
- junk images are removed from the ranking: a positive's 0-based rank drops by the number of junk images ranked
  above it;
- AP is the trapezoid rule over the precision-recall steps: Σ_j (p₀ + p₁)/2 · 1/n_pos with p₀ = j/r_j (1 when
  r_j = 0) and p₁ = (j+1)/(r_j+1), where n_pos counts the ground-truth positives (found in the ranking or not);
- queries without positives are excluded from the mean (their AP is NaN);
- mP@k divides by min(k, last positive's 1-based rank), as revisitop does.

Instead of a per-query loop over ranked lists, everything works on `rank_of` (n_queries × n_db): the 0-based rank
of every database image in each query's ranking, reduced to the (query, image) pairs that are positive or junk
(benchmarks/retrieval_vs_loop.py times it against the loop). That is also what a memory-bounded search over +1M distractors
produces (distractors are never positive nor junk, they only push ranks down), so one code path serves both.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["ranks_to_rank_of", "map_from_rank_of", "compute_map", "gnd_masks", "REVISITED_SETUPS"]

# revisitop's three setups: (positives, junk) as unions of the gnd keys (revisitop README / example_evaluate.py).
REVISITED_SETUPS = {
    "E": (("easy",), ("junk", "hard")),
    "M": (("easy", "hard"), ("junk",)),
    "H": (("hard",), ("junk", "easy")),
}


def ranks_to_rank_of(ranks: np.ndarray) -> np.ndarray:
    """revisitop's `ranks` (n_db × n_queries, column q = db indices in ranked order) → rank_of (n_queries × n_db)."""
    ranks = np.asarray(ranks)
    n_db, nq = ranks.shape
    rank_of = np.empty((nq, n_db), dtype=np.int64)
    rank_of[np.arange(nq)[:, None], ranks.T] = np.arange(n_db)[None, :]
    return rank_of


def gnd_masks(gnd: Sequence[dict], n_db: int, pos_keys: Sequence[str], junk_keys: Sequence[str]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean (n_queries × n_db) masks of positives and junk, and the number of listed positives per query.

    The count is the length of the positive lists (revisitop's `len(qgnd)`), not the mask's sum.
    """
    nq = len(gnd)
    pos = np.zeros((nq, n_db), dtype=bool)
    junk = np.zeros((nq, n_db), dtype=bool)
    n_pos = np.zeros(nq, dtype=np.int64)
    for q, g in enumerate(gnd):
        for key in pos_keys:
            idx = np.asarray(g.get(key, []), dtype=np.int64).reshape(-1)
            pos[q, idx] = True
            n_pos[q] += len(idx)
        for key in junk_keys:
            junk[q, np.asarray(g.get(key, []), dtype=np.int64).reshape(-1)] = True
    return pos, junk, n_pos


def map_from_rank_of(rank_of: np.ndarray, pos: np.ndarray, junk: np.ndarray, kappas: Sequence[int] = (1, 5, 10),
                     n_pos: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(mAP, per-query AP, mP@kappas, per-query P@kappas) as fractions, like revisitop's `compute_map`.

    Args:
        rank_of: 0-based rank of every database image for every query (n_queries × n_db); ranks within a row are
            distinct, and may exceed n_db when distractors sit in between.
        pos, junk: boolean masks (n_queries × n_db) of positives and junk images.
        n_pos: listed positives per query (default: the mask's row sums).
    """
    rank_of, pos, junk = np.asarray(rank_of), np.asarray(pos, bool), np.asarray(junk, bool)
    nq = rank_of.shape[0]
    n_pos = pos.sum(1) if n_pos is None else np.asarray(n_pos)
    # Only positives and junk matter: keep those (query, image) pairs, each query's in ranked order. Sorting a few
    # hundred entries per query instead of every row keeps this O(n_q·n_db) scan + O(nnz log nnz), ahead of the loop.
    q, d = np.nonzero(pos | junk)
    r = rank_of[q, d]
    order = np.lexsort((r, q))
    q, d, r = q[order], d[order], r[order]
    is_pos, is_junk = pos[q, d], junk[q, d]
    start = np.concatenate(([0], np.cumsum(np.bincount(q, minlength=nq))))[q]      # each pair's query's first slot

    def cumsum_in_query(x: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0], np.cumsum(x)))
        return c[1:] - c[start]

    junk_above = cumsum_in_query(is_junk) - is_junk          # junk strictly above this position
    r_adj = (r - junk_above).astype(np.float64)               # rank after junk removal (revisitop's pos - k)
    j = (cumsum_in_query(is_pos) - 1).astype(np.float64)      # 0-based index among the positives found
    with np.errstate(divide="ignore", invalid="ignore"):
        p0 = np.where(r_adj == 0, 1.0, j / np.where(r_adj == 0, 1.0, r_adj))
        p1 = (j + 1) / (r_adj + 1)
        aps = np.bincount(q, np.where(is_pos, (p0 + p1) / 2.0, 0.0), minlength=nq) / n_pos
    empty = n_pos == 0
    aps[empty] = np.nan
    prs = np.full((nq, len(kappas)), np.nan)
    last = np.full(nq, -np.inf)                                # 1-based adjusted rank of the last positive
    np.maximum.at(last, q[is_pos], r_adj[is_pos] + 1)
    for c, k in enumerate(kappas):
        kq = np.minimum(last, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            prs[:, c] = np.bincount(q, is_pos & (r_adj + 1 <= kq[q]), minlength=nq) / kq
    prs[empty] = np.nan
    valid = ~empty
    mean_ap = float(aps[valid].mean()) if valid.any() else float("nan")
    mean_pr = prs[valid].mean(0) if valid.any() else np.full(len(kappas), np.nan)
    return mean_ap, aps, mean_pr, prs


def compute_map(ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = ()
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop's `compute_map(ranks, gnd, kappas)` signature: ranks is n_db × n_queries, gnd[i] has 'ok', 'junk'."""
    ranks = np.asarray(ranks)
    pos, junk, n_pos = gnd_masks(gnd, ranks.shape[0], ("ok",), ("junk",))
    return map_from_rank_of(ranks_to_rank_of(ranks), pos, junk, kappas, n_pos)
