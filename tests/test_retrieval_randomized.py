"""Retrieval mAP on hundreds of random problems against the references written out here: revisitop's evaluate.py
(the loop transcription in test_retrieval.py) for the revisited protocol and the Oxford Buildings compute_ap.cpp for
the original one, plus hand-worked cases of the two counting rules where compute_ap.cpp differs from a list count."""
import numpy as np
import pytest

from bench.data.retrieval import load_retrieval_data
from bench.metrics.retrieval import ORIGINAL_SETUP, REVISITED_SETUPS, ranks_to_rank_of, retrieval_map
from bench.protocols.retrieval import retrieval_metrics
from tests.test_retrieval import ref_compute_map


# ---- transcription of http://www.robots.ox.ac.uk/~vgg/data/oxbuildings/compute_ap.cpp (compute_ap + main) ----
# main(): pos = set(good) ∪ set(ok), amb = set(junk); the ranked list is names. The C++ accumulates in float32;
# this transcription uses Python floats, which is what bench is compared against to 1e-9.
def ref_cpp_compute_ap(pos, amb, ranked_list):
    old_recall = 0.0
    old_precision = 1.0
    ap = 0.0
    intersect_size = 0
    j = 0
    for name in ranked_list:
        if name in amb:
            continue
        if name in pos:
            intersect_size += 1
        recall = intersect_size / float(len(pos)) if pos else float("nan")
        precision = intersect_size / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall = recall
        old_precision = precision
        j += 1
    return ap


def ref_cpp_main(good, ok, junk, ranked_list):
    return ref_cpp_compute_ap(set(good) | set(ok), set(junk), ranked_list)


def _original_gnd(names, good, ok, junk):
    """What bench's original loader builds: index arrays of the names in the database, and compute_ap's count."""
    where = {s: i for i, s in enumerate(names)}
    idx = lambda lst: np.array([where[s] for s in lst if s in where], np.int64)  # noqa: E731
    return {"good": idx(good), "ok": idx(ok), "junk": idx(junk), "n_pos": len(set(good) | set(ok))}


def test_randomized_original_against_compute_ap_cpp():
    """240 random problems: names listed in good and ok at once, junk overlapping the positives, listed names
    missing from the database, queries without positives, rankings with distractors in between."""
    rng = np.random.default_rng(11)
    for case in range(240):
        n_db, nq, n_dis = int(rng.integers(3, 40)), int(rng.integers(1, 6)), int(rng.integers(0, 3)) * 7
        names = [f"im{i}" for i in range(n_db)]
        pool = names + [f"missing{i}" for i in range(4)]
        gnd, lists = [], []
        for _ in range(nq):
            good, ok, junk = (list(rng.choice(pool, size=int(rng.integers(0, 6)))) for _ in range(3))
            lists.append((good, ok, junk))
            gnd.append(_original_gnd(names, good, ok, junk))
        full = np.stack([rng.permutation(n_db + n_dis) for _ in range(nq)])   # ranks of db images + distractors
        rank_of = full[:, :n_db]
        ours = retrieval_map(gnd, ORIGINAL_SETUP, (1, 5), rank_of=rank_of, cpp_original=True)[""]
        everything = names + [f"distractor{i}" for i in range(n_dis)]
        ref = np.array([ref_cpp_main(*lists[q], [everything[i] for i in np.argsort(full[q])])
                        for q in range(nq)])
        np.testing.assert_allclose(ours[1], ref, atol=1e-9, err_msg=f"case {case}")   # NaN where no positive
        if not np.isnan(ref).all():
            assert ours[0] == pytest.approx(np.nanmean(ref), abs=1e-9)
        if n_dis == 0:   # revisitop's ranks layout gives the same
            ranks = np.argsort(full, axis=1).T
            np.testing.assert_allclose(retrieval_map(gnd, ORIGINAL_SETUP, (1, 5), ranks=ranks,
                                                     cpp_original=True)[""][1], ref, atol=1e-9)


def test_randomized_revisited_against_revisitop():
    """240 random problems for each of E, M, H: duplicated ids inside a list (revisitop counts them in n_pos),
    overlapping easy/hard/junk, queries without positives, from revisitop's ranks and from rank_of with gaps."""
    rng = np.random.default_rng(12)
    for case in range(240):
        n_db, nq, n_dis = int(rng.integers(2, 40)), int(rng.integers(1, 6)), int(rng.integers(0, 3)) * 5
        gnd = [{k: rng.integers(0, n_db, size=int(rng.integers(0, 6))) for k in ("easy", "hard", "junk")}
               for _ in range(nq)]
        full = np.stack([rng.permutation(n_db + n_dis) for _ in range(nq)])
        ranks_full = np.argsort(full, axis=1).T                  # revisitop layout over db + distractors
        from_rank_of = retrieval_map(gnd, REVISITED_SETUPS, (1, 5, 10), rank_of=full[:, :n_db])
        from_ranks = retrieval_map(gnd, REVISITED_SETUPS, (1, 5, 10), ranks=ranks_full) if n_dis == 0 else None
        for setup, (pos_keys, junk_keys) in REVISITED_SETUPS.items():
            g = [{"ok": np.concatenate([x[k] for k in pos_keys]), "junk": np.concatenate([x[k] for k in junk_keys])}
                 for x in gnd]
            if all(len(x["ok"]) == 0 for x in g):
                continue    # revisitop divides 0 by 0
            ref = ref_compute_map(ranks_full, g, [1, 5, 10])
            for ours in filter(None, (from_rank_of[setup], from_ranks and from_ranks[setup])):
                assert ours[0] == pytest.approx(ref[0], abs=1e-9), (case, setup)
                np.testing.assert_allclose(ours[1], ref[1], atol=1e-9)
                np.testing.assert_allclose(ours[2], ref[2], atol=1e-9)
                np.testing.assert_allclose(ours[3], ref[3], atol=1e-9)


def _write_original(root, good, ok, junk):
    """A 4-image original-protocol folder: jpg/a..d.jpg (names only) and gt_files/q_1_{query,good,ok,junk}.txt."""
    folder = root / "oxford5k"
    (folder / "jpg").mkdir(parents=True)
    (folder / "gt_files").mkdir()
    for n in "abcd":
        (folder / "jpg" / f"{n}.jpg").write_bytes(b"")
    (folder / "gt_files" / "q_1_query.txt").write_text("oxc1_a 0 0 1 1\n")
    for key, lst in (("good", good), ("ok", ok), ("junk", junk)):
        (folder / "gt_files" / f"q_1_{key}.txt").write_text("".join(f"{n}\n" for n in lst))
    return load_retrieval_data(folder, "oxford5k")


@pytest.mark.parametrize("good, ok, expected", [
    # ranking a, b, c, d; the only positive found is b at rank 1: AP = ½(p₀ + p₁)/n_pos = ½(0/1 + 1/2)/n_pos
    (["b", "zz_not_in_db"], [], 0.125),   # compute_ap.cpp: n_pos = |{b, zz}| = 2 (a list count in the db: 1 → 0.25)
    (["b"], ["b"], 0.25),                 # b in good and ok: the set has 1 element (a list count: 2 → 0.125)
    (["b"], [], 0.25),
])
def test_original_counts_positives_as_compute_ap_cpp(tmp_path, good, ok, expected):
    data = _write_original(tmp_path, good, ok, junk=[])
    rank_of = np.array([[0, 1, 2, 3]])     # a, b, c, d in this order
    metrics, _ = retrieval_metrics(rank_of, data, (1, 5))
    assert metrics["mAP"] == pytest.approx(100 * expected)
    assert ref_cpp_main(good, ok, [], list("abcd")) == pytest.approx(expected)


def test_original_junk_wins_over_positive(tmp_path):
    # b is in good and junk: compute_ap.cpp skips it (amb is tested first) but keeps it in |pos| = |{b, c}| = 2;
    # c moves from rank 2 to rank 1: AP = ½(0/1 + 1/2)/2 = 0.125
    data = _write_original(tmp_path, ["b", "c"], [], ["b"])
    metrics, _ = retrieval_metrics(np.array([[0, 1, 2, 3]]), data, (1,))
    assert metrics["mAP"] == pytest.approx(12.5)


def test_ranks_and_rank_of_agree_on_a_hand_worked_revisited_case():
    # ranking P J N P (positives db 2 and 1, junk db 0): AP = ½[(1 + 1)/2 + (1/2 + 2/3)/2] = 19/24 in both layouts
    ranks = np.array([[2], [0], [3], [1]])
    gnd = [{"easy": np.array([2, 1]), "hard": np.array([], int), "junk": np.array([0])}]
    setup = {"M": REVISITED_SETUPS["M"]}
    a = retrieval_map(gnd, setup, (1,), ranks=ranks)["M"][0]
    b = retrieval_map(gnd, setup, (1,), rank_of=ranks_to_rank_of(ranks))["M"][0]
    assert a == pytest.approx(19 / 24) and b == pytest.approx(19 / 24)


def test_randomized_tied_similarities_end_to_end():
    """240 random problems whose features sit on a coarse grid, so many query-image similarities are exactly
    equal (in float32 too): bench's ranking (rank_of_database, distractors counted per chunk) + mAP equal
    revisitop's pipeline (sim = X·Q, ranks = argsort(-sim) over database then distractors, compute_map) with
    ties broken by position in that list — the rule bench documents; revisitop's np.argsort (quicksort) leaves
    the order of ties to numpy, so this is the one definition both can share."""
    from bench.protocols.retrieval import rank_of_database
    rng = np.random.default_rng(13)
    tied = 0
    for case in range(240):
        n_db, nq, n_dis, d = int(rng.integers(2, 30)), int(rng.integers(1, 5)), int(rng.integers(0, 20)), \
            int(rng.integers(1, 4))
        grid = lambda n: (rng.integers(-2, 3, size=(n, d)) / 4).astype(np.float32)  # noqa: E731
        q, db, dis = grid(nq), grid(n_db), grid(n_dis)
        rank_of = rank_of_database(q, db, dis if n_dis else None, chunk=int(rng.integers(1, 8)))
        full = np.concatenate([db, dis])
        sim = full @ q.T                                                   # revisitop: (n_db + n_dis, nq)
        ranks = np.argsort(-sim, axis=0, kind="stable")
        tied += any(len(np.unique(sim[:, i])) < len(sim) for i in range(nq))
        gnd = [{k: rng.choice(n_db, size=int(rng.integers(0, min(n_db, 5) + 1)), replace=False)
                for k in ("easy", "hard", "junk")} for _ in range(nq)]
        ours = retrieval_map(gnd, REVISITED_SETUPS, (1, 5), rank_of=rank_of)
        for setup, (pos_keys, junk_keys) in REVISITED_SETUPS.items():
            g = [{"ok": np.concatenate([x[k] for k in pos_keys]), "junk": np.concatenate([x[k] for k in junk_keys])}
                 for x in gnd]
            if all(len(x["ok"]) == 0 for x in g):
                continue
            ref = ref_compute_map(ranks, g, [1, 5])
            assert ours[setup][0] == pytest.approx(ref[0], abs=1e-9), (case, setup)
            np.testing.assert_allclose(ours[setup][1], ref[1], atol=1e-9)
    assert tied > 200
