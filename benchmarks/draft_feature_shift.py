"""How far reduced-size JPEG decoding (TransformSpec.draft) moves the features of a trained checkpoint.

    python benchmarks/draft_feature_shift.py                         # mini_supervised_resnet18 (trained miniature)
    python benchmarks/draft_feature_shift.py --ckpt mini_mocov2_resnet18 --image-size 500x375

The ImageNet miniature's images are re-saved at --image-size (as benchmarks/extraction_vs_forward.py does), then
features of train and val are extracted at the checkpoint's miniature resolution (32 px: resize 37, crop 32) with
full decoding and with draft decoding (PIL decodes the 500×375 JPEG at 1/8 size, 63×47, before the same bicubic
resize). Printed: cosine similarity between each image's two feature vectors (median, 1st percentile) and the
weighted k-NN top-1 (DINO's k=20, T=0.07) with each, which is what a bench number would move by.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import machine  # noqa: E402
from extraction_vs_forward import _resave  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="mini_supervised_resnet18")
    p.add_argument("--image-size", default="500x375")
    p.add_argument("--resolution", type=int, default=32)
    a = p.parse_args()
    os.environ["BENCH_PROGRESS"] = "0"
    from bench.backbones import load_backbone
    from bench.cache import extract_features
    from bench.data import TransformSpec, build_eval_transform, open_dataset
    from bench.data.mini import write_minis
    from bench.protocols.knn import knn_evaluate

    bb = load_backbone(a.ckpt)
    feats = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_minis(Path(tmp), ["imagenet"])
        _resave(Path(tmp) / "imagenet", a.image_size)
        for draft in (False, True):
            spec = TransformSpec(resize=round(a.resolution * 256 / 224), crop=a.resolution,
                                 mean=bb.preprocessing.mean, std=bb.preprocessing.std, draft=draft)
            for split in ("train", "val"):
                ds = open_dataset("imagenet", Path(tmp), split, build_eval_transform(spec), mini=True)
                feats[draft, split] = extract_features(bb, ds, split=split, dataset_name="imagenet",
                                                       feature_mode=bb.feature_mode, transform=spec.to_dict(),
                                                       data_root=tmp, cache_dir=None, batch_size=128)
    full, dr = feats[False, "val"].features, feats[True, "val"].features
    cos = (full * dr).sum(1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(dr, axis=1))
    top1 = {d: knn_evaluate(feats[d, "train"].features, feats[d, "train"].labels, feats[d, "val"].features,
                            feats[d, "val"].labels, ks=(20,))[20][0] for d in (False, True)}
    print(f"machine: {machine()}")
    print(f"{a.ckpt}, imagenet miniature re-saved at {a.image_size}, resize {spec.resize} crop {spec.crop}, "
          f"draft decode short side ≥ {spec.draft_size()}")
    print(f"cosine(full, draft) over {len(cos)} val images: median {np.median(cos):.4f}, 1st percentile "
          f"{np.percentile(cos, 1):.4f}, min {cos.min():.4f}")
    print(f"k-NN top-1 (k=20): full decode {top1[False]:.2f}  draft {top1[True]:.2f}  "
          f"difference {top1[True] - top1[False]:+.2f} points")


if __name__ == "__main__":
    main()
