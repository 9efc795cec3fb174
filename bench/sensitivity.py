"""How far does a number move across the protocol choices papers make differently? One choice at a time.

`bench sensitivity --ckpt X --protocol P` runs P's preset as published (the *paper* variant) and then each
variant that changes one choice to a value another paper uses, everything else fixed:

- feature (ViTs): CLS after the final norm (DINO k-NN, DINOv2 logreg), CLS before it, mean of the patch tokens
  (MAE's global pool), CLS ‖ mean patch (DINOv2 linear), the last 4 blocks' CLS (DINO ViT-S linear);
- crop ratio: resize 256 → crop 224 (0.875, most papers), 0.95 (DeiT III / BEiT v2 fine-tuning eval), 1.0
  (DINOv2 logreg: resize 224 → crop 224); input size 224 / 256 / 288 (on the 64-px miniatures 64 / 80 / 96);
- resize interpolation: bicubic (DINO, timm) / bilinear (torchvision, MoCo);
- normalisation: ImageNet statistics / 0.5 (BEiT, some MAE code) / CLIP's;
- k-NN: k ∈ {10, 20, 100, 200} (DINO prints 10 and 20, InstDisc 200), T ∈ {0.02, 0.05, 0.07, 0.1};
- linear (many-heads grid): DINOv2's 13 learning rates × 4 weight decays, or one of its learning rates / one
  weight decay alone; logreg: DINOv2's 45-value C grid or a fixed C ∈ {0.1, 1, 10} (scikit-learn's default 1);
- retrieval: pooling (GeM p = 3 / average / CLS), whitening none / global, single or three scales.

Every variant is an ordinary `bench run` (records under OUT/sensitivity/runs/, the paper variant's in OUT/runs/),
so cached features are reused and each point is reproduced by the command the sweep record stores for it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchError
from .uncertainty import record_interval

__all__ = ["Variant", "SWEEP_PROTOCOLS", "variants", "run_sweep", "sweep_spread"]

_logger = logging.getLogger(__name__)

SWEEP_PROTOCOLS = ("knn", "linear", "logreg", "retrieval")
VIT_FEATURES = ("cls", "cls-prenorm", "avgpool", "cls+avgpool", "last4-cls")
CROP_RATIOS = (0.875, 0.95, 1.0)
NORMALISATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}
KNN_K, KNN_T = (10, 20, 100, 200), (0.02, 0.05, 0.07, 0.1)
LOGREG_C = (0.1, 1.0, 10.0)
# the preset field holding each frozen-feature protocol's (eval) transform
TRANSFORM_FIELD = {"knn": "transform", "logreg": "transform", "linear": "eval_transform"}


@dataclass(frozen=True)
class Variant:
    axis: str                                   # "paper" for the preset as published
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    feature_mode: str | None = None
    resolution: int | None = None

    @property
    def paper(self) -> bool:
        return self.axis == "paper"


def _sizes(paper: int) -> tuple[int, ...]:
    """The paper's input size and two larger ones papers use: 224 → 256, 288 (steps of 32); a small miniature size
    in steps of 16 (64 → 80, 96), multiples of a ViT's 16-px patch either way."""
    step = 32 if paper >= 160 else 16
    return paper, paper + step, paper + 2 * step


def _transform_variants(protocol: str, preset, paper_size: int | None, default_norm: tuple) -> list[Variant]:
    key = TRANSFORM_FIELD.get(protocol)
    if key is None:
        return []
    base = dict(getattr(preset, key))
    out = []
    crop, resize = base.get("crop"), base.get("resize")
    if isinstance(crop, int) and isinstance(resize, int):
        for ratio in CROP_RATIOS:
            if round(crop / ratio) != resize:
                out.append(Variant("crop ratio", f"{ratio:g}", {key: {**base, "resize": round(crop / ratio)}}))
    paper_size = paper_size or (crop if isinstance(crop, int) else None)
    for size in _sizes(paper_size)[1:] if paper_size else ():
        out.append(Variant("input size", str(size), resolution=size))
    for interp in ("bicubic", "bilinear"):
        if base.get("interpolation", "bilinear") != interp:
            out.append(Variant("interpolation", interp, {key: {**base, "interpolation": interp}}))
    for name, (mean, std) in NORMALISATIONS.items():
        if not all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip((*mean, *std), default_norm)):
            out.append(Variant("normalisation", name, {key: {**base, "mean": list(mean), "std": list(std)}}))
    return out


def _protocol_variants(protocol: str, preset) -> list[Variant]:
    out = []
    if protocol == "knn":
        out += [Variant("k", str(k), {"headline_k": k}) for k in KNN_K if k != preset.headline_k and k in preset.k]
        out += [Variant("temperature", f"{t:g}", {"temperature": t}) for t in KNN_T
                if not math.isclose(t, preset.temperature)]
    elif protocol == "linear" and preset.mode == "grid":
        lrs, wds = tuple(preset.grid_lrs), tuple(preset.grid_weight_decays)
        out += [Variant("lr grid", f"lr={lr:g} only", {"grid_lrs": [lr]}) for lr in (1e-3, 1e-2, 0.1) if lr in lrs]
        out += [Variant("wd grid", f"wd={wd:g} only", {"grid_weight_decays": [wd]}) for wd in (0.0, 1e-4)
                if wd in wds and len(wds) > 1]
    elif protocol == "logreg":
        out += [Variant("C grid", f"C={c:g}", {"c_lo_exp": math.log10(c), "c_hi_exp": math.log10(c), "c_num": 1})
                for c in LOGREG_C]
    elif protocol == "retrieval":
        if preset.pooling != "gem" or preset.gem_p != 3.0:
            out.append(Variant("pooling", "GeM p=3", {"pooling": "gem", "gem_p": 3.0}))
        if preset.pooling != "gem" or preset.gem_p != 1.0:
            out.append(Variant("pooling", "average (GeM p=1)", {"pooling": "gem", "gem_p": 1.0}))
        for w in ("none", "global"):
            if preset.whiten != w:
                out.append(Variant("whitening", w, {"whiten": w}))
        out += [Variant("interpolation", i, {"interpolation": i}) for i in ("bilinear", "bicubic")
                if i != preset.interpolation]
        scales = (0.7071067811865476, 1.0, 1.4142135623730951)
        if tuple(preset.scales) != scales:
            out.append(Variant("scales", "1/√2, 1, √2", {"scales": list(scales)}))
    return out


def variants(protocol: str, preset, *, vit: bool, paper_feature: str | None, paper_size: int | None,
             default_norm: tuple) -> list[Variant]:
    """The paper variant first, then one variant per (axis, value) that differs from it."""
    if protocol not in SWEEP_PROTOCOLS:
        raise BenchError(f"bench sensitivity covers {', '.join(SWEEP_PROTOCOLS)}, not {protocol!r}")
    out = [Variant("paper", "as published")]
    if vit and protocol != "retrieval":
        paper = "cls" if paper_feature in (None, "output", "cls") else paper_feature
        out += [Variant("feature", mode, feature_mode=mode) for mode in VIT_FEATURES if mode != paper]
    elif vit and protocol == "retrieval" and preset.pooling != "cls":
        out.append(Variant("pooling", "CLS", {"pooling": "cls"}))
    out += _transform_variants(protocol, preset, paper_size, default_norm)
    out += _protocol_variants(protocol, preset)
    return out


def _command(protocol: str, preset: str, ckpt: str, v: Variant, out: Path, quick: bool) -> str:
    import json
    parts = ["bench run", f"--protocol {protocol}", f"--preset {preset}", f"--ckpt {ckpt}", f"--out {out}"]
    parts += [f"--set '{k}={json.dumps(val)}'" for k, val in sorted(v.overrides.items())]
    if v.feature_mode:
        parts.append(f"--feature-mode {v.feature_mode}")
    if v.resolution:
        parts.append(f"--resolution {v.resolution}")
    if quick:
        parts.append("--quick")
    return " ".join(parts)


def sweep_spread(points: list[dict[str, Any]]) -> dict[str, Any]:
    """max − min of the headline over all variants that ran, and per axis (the paper variant included in each)."""
    ok = [p for p in points if p.get("value") is not None]
    paper = next((p for p in ok if p["paper"]), None)
    out: dict[str, Any] = {}
    if ok:
        vals = [p["value"] for p in ok]
        out["all"] = {"min": min(vals), "max": max(vals), "spread": max(vals) - min(vals)}
    for axis in dict.fromkeys(p["axis"] for p in ok if not p["paper"]):
        vals = [p["value"] for p in ok if p["axis"] == axis] + ([paper["value"]] if paper else [])
        out[axis] = {"min": min(vals), "max": max(vals), "spread": max(vals) - min(vals)}
    return out


def run_sweep(ctx, protocol: str, *, preset: str | None, ckpt_name: str, out_dir: Path,
              metric: str | None = None, axes: list[str] | None = None) -> dict[str, Any]:
    """Run every variant (records reused when present) and return the sweep record; `axes` keeps only the
    variants of those axes (the paper variant always runs)."""
    from .presets import resolve_preset
    from .protocols import get_protocol
    from .runner import MINI_RESOLUTION, run_protocol
    from tqdm.auto import tqdm
    spec = get_protocol(protocol)
    preset_obj, preset_name = resolve_preset(protocol, spec.preset_cls, preset, {})
    bb = ctx.require_backbone("bench sensitivity")
    from .backbones.features import is_vit
    vs = variants(protocol, preset_obj, vit=is_vit(bb.model), paper_feature=getattr(preset_obj, "feature_mode", None),
                  paper_size=ctx.resolution or (MINI_RESOLUTION if ctx.mini else None),
                  default_norm=(*bb.preprocessing.mean, *bb.preprocessing.std))
    if axes:
        unknown = set(axes) - {v.axis for v in vs}
        if unknown:
            raise BenchError(f"--axes {','.join(sorted(unknown))}: not an axis of this sweep; choose from "
                             f"{', '.join(dict.fromkeys(v.axis for v in vs[1:]))}")
        vs = [v for v in vs if v.paper or v.axis in axes]
    points, paper_rec = [], None
    bar = tqdm(vs, desc=f"sensitivity {protocol}", unit="variant", disable=os.environ.get("BENCH_PROGRESS", "1") == "0")
    for v in bar:
        vctx = dataclasses.replace(ctx, feature_mode=v.feature_mode or ctx.feature_mode,
                                   resolution=v.resolution or ctx.resolution, inputs={}, class_notes={})
        where = out_dir if v.paper else out_dir / "sensitivity"
        point = {"axis": v.axis, "label": v.label, "paper": v.paper, "overrides": v.overrides,
                 "feature_mode": v.feature_mode, "resolution": v.resolution,
                 "command": _command(protocol, preset_name, ckpt_name, v, where, ctx.quick)}
        try:
            rec, _, _ = run_protocol(protocol, vctx, preset=preset_name, overrides=dict(v.overrides),
                                     out_dir=where)
        except BenchError as e:   # e.g. an input size the architecture refuses: the point says so
            _logger.warning("sensitivity variant %s=%s failed: %s", v.axis, v.label, e)
            points.append({**point, "value": None, "error": str(e)})
            continue
        if v.paper:
            paper_rec = rec
        name = metric or next(iter(rec.get("headline") or []), None)
        if name not in rec["metrics"]:
            raise BenchError(f"metric {name!r} is not in the {protocol} record; choose one of {sorted(rec['metrics'])}")
        metric = name
        iv = record_interval(rec, name)
        points.append({**point, "value": float(rec["metrics"][name]), "interval": list(iv) if iv else None,
                       "run_id": rec["run_id"], "fingerprint": rec["fingerprint"]})
    if paper_rec is None:
        raise BenchError(f"the published {protocol} preset {preset_name} did not run on this checkpoint; "
                         f"see the warnings above")
    ck = paper_rec["checkpoint"]
    return {"kind": "sensitivity", "protocol": protocol, "preset": preset_name,
            "preset_version": paper_rec.get("preset_version", 1), "metric": metric, "checkpoint_name": ckpt_name,
            "checkpoint": {k: ck.get(k) for k in ("name", "sha256", "arch", "registry_name")},
            "dataset": paper_rec["dataset"]["name"], "mini": bool(paper_rec["dataset"].get("mini")),
            "quick": bool(ctx.quick), "points": points, "spread": sweep_spread(points)}
