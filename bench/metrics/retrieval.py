"""Instance-retrieval metrics: revisitop's mAP / mP@k (trapezoid AP with junk removed), vectorised over queries.

Reference: filipradenovic/revisitop:python/evaluate.py (`compute_ap`, `compute_map`). Decisions copied from it:
- junk images are removed from the ranking: a positive's 0-based rank drops by the number of junk images ranked
  above it;
- AP is the trapezoid rule over the precision-recall steps: Σ_j (p₀ + p₁)/2 · 1/n_pos with p₀ = j/r_j (1 when
  r_j = 0) and p₁ = (j+1)/(r_j+1), where n_pos counts the ground-truth positives (found in the ranking or not);
- queries without positives are excluded from the mean (their AP is NaN);
- mP@k divides by min(k, last positive's 1-based rank), as revisitop does.

The original Oxford/Paris protocol follows the Oxford Buildings `compute_ap.cpp` instead (`cpp_original=True`):
the positives are the *set* good ∪ ok of names, so a name listed in both counts once and a listed name missing from
the database still counts in n_pos (gnd entries carry that count as `n_pos`); a name that is also junk is skipped
as junk (the C++ tests `amb` first). Its AP is the same trapezoid over the ranking with junk removed.

No per-query Python and no full sort: each query's ground truth is a few hundred images, so the images that are
positive or junk are marked once in a uint8 code array (one bit per gnd key), their ranks are read off the
ranking — a gather over revisitop's `ranks` (n_db × n_queries, then they come out in ranked order) or over
`rank_of` (the rank of every database image, what bench's ranking produces, then only the marked pairs are
sorted) — and AP for all queries is cumulative sums over those pairs (benchmarks/retrieval_vs_loop.py times it
against the loop). `rank_of` may have gaps (distractors ranked in between are never positive nor junk), so one
code path serves +1M distractors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["ranks_to_rank_of", "map_from_rank_of", "compute_map", "gnd_masks", "retrieval_map", "REVISITED_SETUPS",
           "ORIGINAL_SETUP"]

# revisitop's three setups: (positives, junk) as unions of the gnd keys (revisitop README / example_evaluate.py).
REVISITED_SETUPS = {
    "E": (("easy",), ("junk", "hard")),
    "M": (("easy", "hard"), ("junk",)),
    "H": (("hard",), ("junk", "easy")),
}
ORIGINAL_SETUP = {"": (("good", "ok"), ("junk",))}


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


def _map_from_pairs(q: np.ndarray, r: np.ndarray, is_pos: np.ndarray, is_junk: np.ndarray, n_pos: np.ndarray,
                    kappas: Sequence[int]) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """AP and P@k of every query from its positive/junk pairs, given in (query, rank) order."""
    nq = len(n_pos)
    start = np.concatenate(([0], np.cumsum(np.bincount(q, minlength=nq))))[q]      # each pair's query's first slot

    def cumsum_in_query(x: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0], np.cumsum(x)))
        return c[1:] - c[start]

    junk_above = cumsum_in_query(is_junk) - is_junk          # junk strictly above this position
    r_adj = (r - junk_above).astype(np.float64)               # rank after junk removal (revisitop's pos - k)
    j = (cumsum_in_query(is_pos) - 1).astype(np.float64)      # 0-based index among the positives found
    q, r_adj, j = q[is_pos], r_adj[is_pos], j[is_pos]
    with np.errstate(divide="ignore", invalid="ignore"):
        p0 = np.where(r_adj == 0, 1.0, j / np.where(r_adj == 0, 1.0, r_adj))
        aps = np.bincount(q, (p0 + (j + 1) / (r_adj + 1)) / 2.0, minlength=nq) / n_pos
    empty = n_pos == 0
    aps[empty] = np.nan
    prs = np.full((nq, len(kappas)), np.nan)
    last = np.full(nq, -np.inf)                                # 1-based adjusted rank of the last positive
    np.maximum.at(last, q, r_adj + 1)
    for c, k in enumerate(kappas):
        kq = np.minimum(last, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            prs[:, c] = np.bincount(q, r_adj + 1 <= kq[q], minlength=nq) / kq
    prs[empty] = np.nan
    valid = ~empty
    mean_ap = float(aps[valid].mean()) if valid.any() else float("nan")
    mean_pr = prs[valid].mean(0) if valid.any() else np.full(len(kappas), np.nan)
    return mean_ap, aps, mean_pr, prs


def map_from_rank_of(rank_of: np.ndarray, pos: np.ndarray, junk: np.ndarray, kappas: Sequence[int] = (1, 5, 10),
                     n_pos: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(mAP, per-query AP, mP@kappas, per-query P@kappas) as fractions, like revisitop's `compute_map`.

    Args:
        rank_of: 0-based rank of every database image for every query (n_queries × n_db); ranks within a row are
            distinct, and may exceed n_db when distractors sit in between.
        pos, junk: boolean masks (n_queries × n_db) of positives and junk images (an image may be both, as in
            revisitop's loop).
        n_pos: listed positives per query (default: the mask's row sums).
    """
    rank_of, pos, junk = np.asarray(rank_of), np.asarray(pos, bool), np.asarray(junk, bool)
    n_pos = pos.sum(1) if n_pos is None else np.asarray(n_pos)
    q, d = np.nonzero(pos | junk)
    r = rank_of[q, d]
    order = np.lexsort((r, q))
    q, d, r = q[order], d[order], r[order]
    return _map_from_pairs(q, r, pos[q, d], junk[q, d], n_pos, kappas)


def _index(values) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.int64).reshape(-1)


def retrieval_map(gnd: Sequence[dict], setups: dict[str, tuple[Sequence[str], Sequence[str]]],
                  kappas: Sequence[int] = (1, 5, 10), *, rank_of: np.ndarray | None = None,
                  ranks: np.ndarray | None = None, cpp_original: bool = False
                  ) -> dict[str, tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """{setup: (mAP, per-query AP, mP@kappas, per-query P@kappas)} for every setup = (positive keys, junk keys).

    The ranking is either `rank_of` (n_queries × n_db, 0-based rank of each database image, gaps allowed) or
    revisitop's `ranks` (n_db × n_queries, database ids in ranked order). n_pos is revisitop's Σ len(list) over the
    positive keys, or with `cpp_original` compute_ap.cpp's size of the set of positive names (gnd's `n_pos` when
    given, else the distinct indices) with junk taking precedence over positive.
    """
    if (rank_of is None) == (ranks is None):
        raise ValueError("give exactly one of rank_of and ranks")
    nq = len(gnd)
    n_db = rank_of.shape[1] if rank_of is not None else ranks.shape[0]
    keys = sorted({k for pk, jk in setups.values() for k in (*pk, *jk)})
    if len(keys) > 8:
        raise ValueError(f"at most 8 ground-truth keys, got {keys}")
    bit = {k: np.uint8(1 << b) for b, k in enumerate(keys)}
    lists = {k: [_index(g.get(k)) for g in gnd] for k in keys}
    # every (query, image) pair named by some key, once, with the OR of its keys' bits
    qs = np.concatenate([np.repeat(np.arange(nq), [len(x) for x in lists[k]]) for k in keys] + [np.zeros(0, int)])
    ds = np.concatenate([x for k in keys for x in lists[k]] + [np.zeros(0, np.int64)])
    bits = np.concatenate([np.full(sum(len(x) for x in lists[k]), bit[k]) for k in keys] + [np.zeros(0, np.uint8)])
    pair, inverse = np.unique(qs * n_db + ds, return_inverse=True)
    pair_code = np.zeros(len(pair), np.uint8)
    np.bitwise_or.at(pair_code, inverse, bits)
    if ranks is not None:
        # one pass over the ranking: the code of the image at every rank (flat index q·n_db + id)
        code = np.zeros(nq * n_db, np.uint8)
        code[pair] = pair_code
        ranks = np.asarray(ranks)
        found = np.flatnonzero(code[ranks + (np.arange(nq) * n_db)[None, :]])       # (rank, query) order
        r, q = np.divmod(found, nq)
        c = code[q * n_db + ranks[r, q]]
    else:
        q, d = np.divmod(pair, n_db)
        r, c = np.asarray(rank_of)[q, d], pair_code
    order = np.lexsort((r, q))
    q, r, c = q[order], r[order], c[order]
    out = {}
    for name, (pos_keys, junk_keys) in setups.items():
        pos_bits = np.bitwise_or.reduce([bit[k] for k in pos_keys])
        junk_bits = np.bitwise_or.reduce([bit[k] for k in junk_keys]) if junk_keys else np.uint8(0)
        is_pos, is_junk = (c & pos_bits) > 0, (c & junk_bits) > 0
        if cpp_original:
            is_pos &= ~is_junk
            n_pos = np.array([int(g["n_pos"]) if "n_pos" in g else
                              len(np.unique(np.concatenate([lists[k][i] for k in pos_keys])))
                              for i, g in enumerate(gnd)], dtype=np.int64)
        else:
            n_pos = np.array([sum(len(lists[k][i]) for k in pos_keys) for i in range(nq)], dtype=np.int64)
        keep = is_pos | is_junk
        out[name] = _map_from_pairs(q[keep], r[keep], is_pos[keep], is_junk[keep], n_pos, kappas)
    return out


def compute_map(ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = ()
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop's `compute_map(ranks, gnd, kappas)` signature: ranks is n_db × n_queries, gnd[i] has 'ok', 'junk'."""
    return retrieval_map(gnd, {"": (("ok",), ("junk",))}, kappas, ranks=ranks)[""]
