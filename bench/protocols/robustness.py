"""Robustness of a trained ImageNet classifier: ImageNet-A, -R, -Sketch, V2 top-1, ImageNet-C mCE, ImageNet-P flips.

The classifier is the head a linear / finetune run saved with its record (`--classifier RECORD|FINGERPRINT|FILE`,
bench/classifier.py), or a supervised checkpoint's own head (`--classifier own`, the model's logits). Images go
through the eval transform of the protocol that trained the head (`own`: the preset's, Hendrycks' test.py
Resize(256) + CenterCrop(224)); ImageNet-C/-P images are stored at the crop size already, so they are only
centre-cropped (ImageNet-C/test.py:244 CenterCrop(224); ImageNet-P/test.py:202 no resize), then normalised.

- ImageNet-A / -R: logits restricted to the wnids of the set's class folders (the 200 of each release), as
  hendrycks/natural-adv-examples eval.py (`output[:, indices_in_1k]`) and hendrycks/imagenet-r eval.py
  (`output[:, imagenet_r_mask]`); top-1 over that subset.
- ImageNet-Sketch, ImageNetV2 (matched-frequency): top-1 over all the classifier's classes.
- ImageNet-C: per corruption and severity the top-1 error; mCE = mean over corruptions of Σ_s E / Σ_s E_AlexNet,
  relative mCE (needs the clean val error) and the unnormalised mean error (bench/metrics/robustness.py).
- ImageNet-P (difficulty 1): flip probability per perturbation (ImageNet-P/test.py `flip_prob`), the mean over the
  perturbations (`mFP`, unnormalised) and the mean top-5 distance (`mT5D_raw`); mFR = mean FP / FP_AlexNet when
  AlexNet's flip probabilities are given: measured, from the record of a robustness run of torchvision's AlexNet
  (`--alexnet-record`, how the paper got them: no code of the authors holds the numbers, hendrycks/robustness#49
  points to their results spreadsheet), or transcribed into the preset (`alexnet_flip_prob`).

Metrics are keyed `<dataset>:<metric>` (bench/tables.py spreads them over one table per dataset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..errors import BenchError
from . import ProtocolResult, register_protocol

__all__ = ["RobustnessPreset", "SETS"]

SETS = ("imagenet_a", "imagenet_r", "imagenet_sketch", "imagenetv2", "imagenet_c", "imagenet_p")


@dataclass(frozen=True)
class RobustnessPreset:
    datasets: tuple[str, ...] = SETS
    clean: bool = True                       # clean ImageNet val top-1 (needed by relative mCE)
    eval_transform: dict = field(default_factory=lambda: {"resize": 256, "crop": 224, "interpolation": "bilinear"})
    alexnet_flip_prob: dict = field(default_factory=dict)   # {perturbation: AlexNet FP}; empty: no mFR
    quick_images: int = 64                   # --quick: a seeded subset of each set / corruption-severity
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        unknown = set(self.datasets) - set(SETS)
        if unknown:
            raise ValueError(f"unknown robustness dataset(s) {sorted(unknown)}; choose from {', '.join(SETS)}")


def _add_arguments(p) -> None:
    p.add_argument("--classifier", default="own",
                   help="own (the checkpoint's own head), a linear/finetune record (path or fingerprint) or its "
                        "classifier.safetensors (default: own)")
    p.add_argument("--classifier-results", default="results",
                   help="results folder whose runs/ --classifier is looked up in (default: results)")
    p.add_argument("--alexnet-record", metavar="RECORD",
                   help="a robustness record of torchvision's ImageNet AlexNet (`bench run --protocol robustness "
                        "--model tv:alexnet --ckpt alexnet-owt-7be5be79.pth`): its ImageNet-P flip probabilities "
                        "normalise mFR, as the paper's AlexNet measurements did")


def _options(args) -> dict:
    # only when given, so the run ids of records without it stay what they were
    extra = {"alexnet_record": args.alexnet_record} if getattr(args, "alexnet_record", None) else {}
    return {"classifier": args.classifier, "classifier_results": args.classifier_results, **extra}


def _subset(ds, ctx, preset):
    if ctx.quick and len(ds) > preset.quick_images:
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(ctx.seed))[:preset.quick_images]
        return Subset(ds, keep.sort().values.tolist())
    return ds


def _logits(ctx, clf, ds) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(ds, batch_size=ctx.batch_size, num_workers=ctx.workers, shuffle=False)
    out, labels = [], []
    with torch.no_grad():
        for images, target in loader:
            out.append(clf.forward(images.to(ctx.device)).float().cpu())
            labels.append(torch.as_tensor(target))
    return torch.cat(out), torch.cat(labels)


def restrict(logits: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Logits with every class outside `keep` set to −inf: argmax over the subset, in the classifier's indices."""
    mask = torch.full((logits.shape[1],), float("-inf"))
    mask[keep] = 0.0
    return logits + mask


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean() * 100)


def _transforms(ctx, clf, preset):
    from ..data import TransformSpec, build_eval_transform
    from dataclasses import replace
    spec = TransformSpec(**clf.transform) if clf.transform else ctx.transform_spec(preset.eval_transform)
    stored = replace(spec, resize=None)   # C/P images are stored at the crop size: centre crop only
    return build_eval_transform(spec), build_eval_transform(stored), spec.to_dict(), stored.to_dict()


@register_protocol("robustness", preset_cls=RobustnessPreset, accepts_features=False,
                   add_arguments=_add_arguments, options=_options)
def run_robustness(ctx, preset: RobustnessPreset) -> ProtocolResult:
    """ImageNet-A/-R/-Sketch/V2 top-1, ImageNet-C mCE, ImageNet-P flip rates of a saved or supervised classifier."""
    from ..classifier import load_classifier
    from ..data import robustness as rd
    backbone = ctx.require_backbone("robustness")
    if ctx.data_root is None:
        raise BenchError("robustness needs images; give --data-root (or use the miniatures)")
    backbone.model.to(ctx.device).eval()
    opts = ctx.options or {}
    clf = load_classifier(opts.get("classifier", "own"), backbone, results=Path(opts.get("classifier_results",
                          "results")), device=ctx.device, data_root=ctx.data_root.path, seed=ctx.seed)
    tf, stored_tf, spec, stored_spec = _transforms(ctx, clf, preset)
    root = Path(ctx.data_root.path)
    metrics: dict[str, float] = {}
    details: dict = {"classifier": clf.info, "num_classes": len(clf.classes), "eval_transform": spec,
                     "stored_transform": stored_spec}
    clean_err = None
    if preset.clean:
        ds, _ = rd.open_wnid_folder(root / "imagenet" / "val", clf.classes, tf, "ImageNet val")
        metrics["imagenet:top1"] = _top1(*_logits(ctx, clf, _count(ctx, "imagenet/val", _subset(ds, ctx, preset))))
        clean_err = 1 - metrics["imagenet:top1"] / 100
    for name in preset.datasets:
        folder = root / rd.FOLDERS[name]
        if name in ("imagenet_a", "imagenet_r", "imagenet_sketch"):
            ds, wnids = rd.open_wnid_folder(folder, clf.classes, tf, name)
            logits, labels = _logits(ctx, clf, _count(ctx, name, _subset(ds, ctx, preset)))
            if name != "imagenet_sketch":
                _check_subset(name, wnids, ctx)
                logits = restrict(logits, [clf.classes.index(w) for w in wnids])
                details[f"{name}_classes"] = len(wnids)
            metrics[f"{name}:top1"] = _top1(logits, labels)
        elif name == "imagenetv2":
            ds = rd.open_imagenetv2(folder, len(clf.classes), tf)
            metrics["imagenetv2:top1"] = _top1(*_logits(ctx, clf, _count(ctx, name, _subset(ds, ctx, preset))))
        elif name == "imagenet_c":
            metrics.update(_imagenet_c(ctx, clf, preset, folder, stored_tf, clean_err, details))
        else:
            metrics.update(_imagenet_p(ctx, clf, preset, folder, stored_tf, details))
    order = ("imagenet_a:top1", "imagenet_c:mCE", "imagenet_p:mFR", "imagenet_p:mFP", "imagenet_r:top1")
    headline = tuple(k for k in order if k in metrics)
    return ProtocolResult(metrics, details, headline=headline)


def _count(ctx, key: str, ds):
    ctx.inputs[key] = {"source": "images", "count": len(ds)}
    return ds


def _check_subset(name: str, wnids: list[str], ctx) -> None:
    """On the full data the class folders must be the release's 200 (timm ships both lists)."""
    if ctx.mini:
        return
    import timm.data
    ref = (Path(timm.data.__file__).parent / "_info" / f"{name}_synsets.txt").read_text().split()
    if sorted(ref) != wnids:
        raise BenchError(f"{name}: {len(wnids)} class folders, not the release's {len(ref)} wnids; re-extract it")


def _imagenet_c(ctx, clf, preset, folder: Path, tf, clean_err, details) -> dict[str, float]:
    from ..data import robustness as rd
    from ..metrics.robustness import CORRUPTIONS, corruption_errors
    errors = {}
    for corruption, severities in rd.corruption_folders(folder).items():
        errs = []
        for s, sev in enumerate(severities, 1):
            ds, _ = rd.open_wnid_folder(sev, clf.classes, tf, f"ImageNet-C {corruption}/{s}")
            ds = _count(ctx, f"imagenet_c/{corruption}/{s}", _subset(ds, ctx, preset))
            errs.append(1 - _top1(*_logits(ctx, clf, ds)) / 100)
        errors[corruption] = errs
    out = corruption_errors(errors, clean_err)
    details["imagenet_c_errors"] = {c: [100 * e for e in v] for c, v in errors.items()}
    details["imagenet_c_ce"] = {k[3:]: v for k, v in out.items() if k.startswith("CE_")}
    missing = sorted(set(CORRUPTIONS) - set(errors))
    if missing:   # the miniature ships a few corruptions; on the full data this names an incomplete download
        details["imagenet_c_note"] = f"mCE over {len(details['imagenet_c_ce'])} of the 15 corruptions; absent: " \
                                     f"{', '.join(missing)}"
    return {f"imagenet_c:{k}": v for k, v in out.items() if not k.startswith("CE_")}


def _imagenet_p(ctx, clf, preset, folder: Path, tf, details) -> dict[str, float]:
    from ..data import robustness as rd
    from ..data.datasets import check_folder
    from ..metrics.robustness import flip_probability, mean_flip_rate, top5_distance
    check_folder(folder, "ImageNet-P")
    fps, t5 = {}, {}
    for p in sorted(d.name for d in folder.iterdir() if d.is_dir()):
        ds = _count(ctx, f"imagenet_p/{p}", _subset(rd.open_videos(folder / p, clf.classes, tf), ctx, preset))
        preds, ranks = [], []
        with torch.no_grad():   # one sequence per step: its frames are the batch
            for frames, _ in DataLoader(ds, batch_size=None, num_workers=ctx.workers):
                logits = clf.forward(frames.to(ctx.device)).float().cpu()
                preds.append(logits.argmax(1).numpy())
                # rankdata(-logits, 'ordinal'): 1-based rank of each class, ties by index
                order = torch.argsort(-logits, dim=1, stable=True)
                ranks.append((torch.argsort(order, dim=1) + 1).numpy())
        noise = "noise" in p   # test.py:234, 257: `'noise' in args.perturbation`
        fps[p], t5[p] = flip_probability(preds, noise), top5_distance(ranks, noise)
    details["imagenet_p_flip_prob"] = {p: 100 * v for p, v in fps.items()}
    details["imagenet_p_top5_distance"] = t5
    out = {"imagenet_p:mFP": 100 * float(np.mean(list(fps.values()))),
           "imagenet_p:mT5D_raw": float(np.mean(list(t5.values())))}
    alexnet, source = alexnet_flip_probs(ctx, preset, fps)
    fr = mean_flip_rate(fps, alexnet)
    if "mFR" in fr:
        out["imagenet_p:mFR"] = fr["mFR"]
        details["imagenet_p_fr"] = {k[3:]: v for k, v in fr.items() if k.startswith("FR_")}
        details["imagenet_p_mFR_normaliser"] = source
    else:
        details["imagenet_p_note"] = ("no mFR: no AlexNet flip probabilities (pass --alexnet-record, the record of a "
                                      "robustness run of torchvision's AlexNet)")
    return out


def alexnet_flip_probs(ctx, preset: RobustnessPreset, measured: dict[str, float]) -> tuple[dict[str, float], dict]:
    """mFR's normaliser {perturbation: AlexNet flip probability (fraction)} and where it came from: the record
    of a robustness run of AlexNet (`--alexnet-record`; the paper's normaliser is AlexNet measured on the same
    sequences) or the preset's transcribed `alexnet_flip_prob`. Every refusal is one line naming the file."""
    from .._io import sha256_file
    from ..records import read_record, record_problem
    path = (ctx.options or {}).get("alexnet_record")
    if not path:
        given = dict(preset.alexnet_flip_prob)
        return given, {"source": "transcribed (preset alexnet_flip_prob)", "flip_prob": given} if given else {}
    if preset.alexnet_flip_prob:
        raise BenchError("AlexNet's flip probabilities given twice: --alexnet-record and the preset's "
                         "alexnet_flip_prob; keep one")
    path = Path(path)
    hint = "run `bench run --protocol robustness --model tv:alexnet --ckpt alexnet-owt-7be5be79.pth` and pass its record"
    if not path.is_file():
        raise BenchError(f"{path}: AlexNet record not found; {hint}")
    try:   # the record schema every reader of records applies (bench.record_schema): types, lengths, text
        rec = read_record(path)
    except BenchError as e:
        reason = str(e).removeprefix(f"{path}: ").split("; ")[0]
        raise BenchError(f"{path}: not a readable record ({reason}); {hint}") from None
    if problem := record_problem(rec):
        raise BenchError(f"{path}: not a valid run record ({problem}); {hint}")
    if rec.get("protocol") != "robustness":
        raise BenchError(f"{path}: not a robustness record; {hint}")
    ckpt = rec.get("checkpoint") or {}
    arch = str(ckpt.get("arch") or "")
    if "alexnet" not in arch.lower():
        raise BenchError(f"{path}: a record of {arch or 'an unknown architecture'}, not AlexNet; mFR is normalised "
                         f"by AlexNet's flip probabilities; {hint}")
    if ckpt.get("family") == "random" and not ctx.mini:
        raise BenchError(f"{path}: a random-init AlexNet; the normaliser is the ImageNet-trained one; {hint}")
    key = rec.get("run_key") or {}
    if bool(key.get("mini")) != bool(ctx.mini) or bool(key.get("quick")) != bool(ctx.quick) or (
            ctx.quick and key.get("seed") != ctx.seed):
        raise BenchError(f"{path}: AlexNet was measured on other sequences (miniature {key.get('mini')}, --quick "
                         f"{key.get('quick')}, seed {key.get('seed')}) than this run; rerun it with the same data "
                         f"options")
    fp = (rec.get("details") or {}).get("imagenet_p_flip_prob") or {}
    if not isinstance(fp, dict):
        raise BenchError(f"{path}: details.imagenet_p_flip_prob must map perturbation → percent; {hint}")
    missing = sorted(set(measured) - set(fp))
    if missing:
        raise BenchError(f"{path}: no AlexNet flip probability for {', '.join(missing)}; rerun AlexNet on the same "
                         f"ImageNet-P folder")
    bad = sorted(p for p in measured if isinstance(fp[p], bool) or not isinstance(fp[p], (int, float))
                 or not math.isfinite(fp[p]) or fp[p] > 100)
    if bad:
        raise BenchError(f"{path}: AlexNet's flip probability for {', '.join(bad)} is not a percentage in [0, 100] "
                         f"({fp[bad[0]]!r}); {hint}")
    zero = sorted(p for p in measured if not fp[p] > 0)
    if zero:
        raise BenchError(f"{path}: AlexNet's flip probability is 0 for {', '.join(zero)}, which cannot normalise; "
                         f"measure it on more sequences (without --quick)")
    used = {p: float(fp[p]) for p in measured}
    return {p: v / 100 for p, v in used.items()}, {
        "source": "measured by bench", "record": rec.get("run_id"), "file": path.name, "sha256": sha256_file(path),
        "arch": arch, "weights": ckpt.get("sha256") or ckpt.get("name"), "flip_prob": used}
