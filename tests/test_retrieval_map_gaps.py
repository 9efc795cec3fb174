"""map_from_rank_of on rankings with gaps (distractors between database images) and overlapping positive/junk
masks equals revisitop's loop (the transcription in test_retrieval.py) run on the full ranking."""
import numpy as np
import pytest

from bench.metrics.retrieval import map_from_rank_of
from tests.test_retrieval import ref_compute_map


@pytest.mark.parametrize("seed", [0, 1])
def test_gapped_ranks_equal_the_full_ranking_with_distractors(seed):
    rng = np.random.default_rng(seed)
    n_db, n_dis, nq = 60, 140, 9
    full = np.stack([rng.permutation(n_db + n_dis) for _ in range(nq)])   # rank of each image, distractors last
    pos = rng.random((nq, n_db)) < 0.15
    junk = rng.random((nq, n_db)) < 0.15        # may overlap pos: revisitop counts such an image as both
    pos[4] = False                              # a query without positives
    ours = map_from_rank_of(full[:, :n_db], pos, junk, (1, 5, 10))
    ranks = np.argsort(full, axis=1).T          # revisitop layout over db + distractors
    gnd = [{"ok": np.flatnonzero(pos[q]), "junk": np.flatnonzero(junk[q])} for q in range(nq)]
    ref = ref_compute_map(ranks, gnd, [1, 5, 10])
    assert ours[0] == pytest.approx(ref[0], abs=1e-12)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-12)   # NaN at query 4 in both
    np.testing.assert_allclose(ours[3], ref[3], atol=1e-12)
    assert np.isnan(ours[1][4]) and (pos & junk).any()
