"""Reduced-size JPEG decoding (TransformSpec.draft): opt-in, in the cache key, and only where it is implemented."""
import numpy as np
import pytest
from PIL import Image

from bench.data import TransformSpec, build_eval_transform, open_dataset
from bench.data.datasets import load_rgb
from bench.errors import DataError


def test_draft_is_absent_from_default_keys_and_sized_by_the_transform():
    assert "draft" not in TransformSpec().to_dict(), "full decoding keeps the cache keys it always had"
    assert TransformSpec(draft=True).to_dict()["draft"] is True
    assert TransformSpec(resize=256, crop=224, draft=True).draft_size() == 256
    assert TransformSpec(resize=None, crop=224, draft=True).draft_size() == 224
    # TF recipes: the central 0.875 square must still be ≥ 224 after the draft decode → ceil(224 / 0.875) = 256
    assert TransformSpec(resize=None, crop=224, centre_fraction=0.875, draft=True).draft_size() == 256
    assert TransformSpec(resize=256, crop=224).draft_size() is None
    assert build_eval_transform(TransformSpec(resize=40, crop=32, draft=True)).draft_size == 40


def test_load_rgb_draft_decodes_at_the_largest_reduction_that_keeps_the_size(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "a.jpg"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path, quality=90)
    assert load_rgb(path).size == (400, 300)
    # reductions are 1/2, 1/4, 1/8: 1/8 gives 50×37.5 (< 40), so 1/4 → 100×75, both sides ≥ 40
    assert load_rgb(path, draft=40).size == (100, 75)
    assert load_rgb(path, draft=150).size == (200, 150)
    assert load_rgb(path, draft=151).size == (400, 300), "1/2 would make the short side 150 < 151: full size"
    png = tmp_path / "a.png"
    Image.open(path).save(png)
    assert load_rgb(png, draft=40).size == (400, 300), "not a JPEG: decoded whole"


def test_draft_is_refused_for_datasets_that_do_not_implement_it(tmp_path):
    with pytest.raises(DataError, match="draft"):
        open_dataset("cifar10", tmp_path, "test", build_eval_transform(TransformSpec(resize=40, crop=32, draft=True)))
