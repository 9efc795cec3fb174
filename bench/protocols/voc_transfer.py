"""PASCAL VOC fine-tuning transfer (Krähenbühl et al. 2016's benchmark; DeepCluster, Jigsaw++, Doersch et al.).

Three tasks, each fine-tuning the backbone with re-initialised fc6-fc8 either end to end (`finetune: all`) or with
the conv trunk frozen (`fc6-8`); the networks are in `_voc_transfer_nets.py`:

- `classification`: VOC2007 trainval → test, 20-way multi-label BCE, summed logits of 10 test crops; `mAP` as the
  papers' code computes it (sklearn AP, difficult images dropped) and `mAP_11pt` (the devkit's VOC2007 11-point
  AP). `_voc_transfer_cls.py`, after facebookresearch/deepcluster:eval_voc_classif.py.
- `detection`: Fast R-CNN (rbgirshick/fast-rcnn) with external proposals: selective search boxes read from the
  published `selective_search_data/voc_2007_<set>.mat` (or computed with opencv-contrib when installed); `mAP`
  single-scale (600 px) and `mAP_ms` multi-scale (480…1200 px) test of the same model, VOC2007 11-point AP at
  IoU 0.5 with bench's detection evaluation. `_voc_transfer_det.py`.
- `segmentation`: FCN-32s-style head on VOC2012 SegmentationClass, train → val, 21 classes, 255 ignored, `mIoU`
  from one confusion matrix. `_voc_transfer_seg.py`.

Nothing is selected on the test split: each schedule is fixed and the last iterate is evaluated once. On a
miniature the input sizes shrink with --resolution / MINI_RESOLUTION; --quick also shortens the schedule and
narrows fc6/fc7 (never comparable).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["VocTransferPreset", "run_voc_transfer"]


@dataclass(frozen=True)
class VocTransferPreset:
    task: str = "classification"               # classification | detection | segmentation
    finetune: str = "all"                      # all | fc6-8 (trunk frozen)
    train_batchnorm: bool = False              # fc6-8: the frozen trunk's BatchNorm affine parameters still train
    hidden: int = 4096                         # fc6 / fc7 width
    dropout: float = 0.5
    iterations: int = 80_000
    batch_size: int = 16
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lr_step: int = 5000                        # lr × lr_gamma every lr_step iterations
    lr_gamma: float = 0.5
    clip_grad: float = 10.0                    # gradient-norm clipping; 0 = none
    train_split: str = "2007-trainval"
    eval_split: str = "2007-test"
    # classification
    crop: int = 224
    crop_scale: tuple[float, float] = (0.1, 0.5)
    test_crops: int = 10
    test_crop_mode: str = "random"             # random: test_crops draws of the training crop | ten: TenCrop
    test_resize: int = 256                     # ten: Resize before TenCrop(crop)
    # detection (Fast R-CNN)
    proposals: str = "selective_search_data"   # folder of <imdb>.mat (relative to VOCdevkit/ or absolute) |
                                               # "opencv" (selective search computed with opencv-contrib)
    train_scales: tuple[int, ...] = (600,)
    max_size: int = 1000
    test_scales: tuple[int, ...] = (600,)
    ms_test_scales: tuple[int, ...] = (480, 576, 688, 864, 1200)
    ms_max_size: int = 2000
    images_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_thresh: float = 0.5
    bg_thresh_lo: float = 0.1
    roi_size: int = 6                          # RoI pooling grid (CaffeNet 6, VGG-16 7)
    freeze_convs: int = 0                      # `all`: the first N conv layers stay fixed (Fast R-CNN: conv1)
    nms: float = 0.3
    max_per_image: int = 100
    # segmentation (FCN)
    seg_train_split: str = "train"
    seg_eval_split: str = "val"
    num_seg_classes: int = 21
    quick_iterations: int = 20                 # --quick: iterations, fc6/fc7 width (never comparable)
    quick_hidden: int = 256
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, task=("classification", "detection", "segmentation"), finetune=("all", "fc6-8"),
                      test_crop_mode=("random", "ten"))
        if min(self.iterations, self.batch_size, self.lr_step, self.quick_iterations, self.test_crops) < 1:
            raise ValueError("iterations, batch_size, lr_step, quick_iterations and test_crops must be ≥ 1")


@dataclass(frozen=True)
class _Geometry:
    crop: int
    scale: float               # detection / segmentation sizes × scale (1 on full data)
    iterations: int
    lr_step: int
    hidden: int
    batch_size: int


def _geometry(ctx, p: VocTransferPreset) -> _Geometry:
    from ..runner import MINI_RESOLUTION
    crop = ctx.resolution or (MINI_RESOLUTION if ctx.mini else p.crop)
    scale = crop / p.crop
    if ctx.quick:
        it = min(p.iterations, p.quick_iterations)
        return _Geometry(crop, scale, it, max(1, min(p.lr_step, it // 2)), min(p.hidden, p.quick_hidden),
                         min(p.batch_size, 4))
    return _Geometry(crop, scale, p.iterations, p.lr_step, p.hidden, p.batch_size)


@register_protocol("voc_transfer", preset_cls=VocTransferPreset, default_dataset="voc", accepts_features=False)
def run_voc_transfer(ctx, preset: VocTransferPreset) -> ProtocolResult:
    """PASCAL VOC fine-tuning transfer: VOC07 classification, Fast R-CNN detection, FCN segmentation on VOC2012."""
    ctx.require_backbone("voc_transfer")
    if ctx.data_root is None:
        from ..errors import BenchError
        raise BenchError("voc_transfer needs images; give --data-root (the folder holding VOCdevkit/)")
    geo = _geometry(ctx, preset)
    if preset.task == "classification":
        from ._voc_transfer_cls import run_classification
        metrics, details = run_classification(ctx, preset, geo)
        headline, dataset = ("mAP", "mAP_11pt"), "voc2007"
    elif preset.task == "detection":
        from ._voc_transfer_det import run_detection
        metrics, details = run_detection(ctx, preset, geo)
        headline, dataset = ("mAP", "mAP_ms"), "voc2007"
    else:
        from ._voc_transfer_seg import run_segmentation
        metrics, details = run_segmentation(ctx, preset, geo)
        headline, dataset = ("mIoU",), "voc2012"
    samples = details.pop("_samples", {})
    details = {"task": preset.task, "eval_dataset": dataset, "finetune": preset.finetune,
               "geometry": asdict(geo), "quick": ctx.quick,
               "selection": "none: fixed schedule, the last iterate is evaluated once", **details}
    return ProtocolResult(metrics, details, headline=headline, samples=samples)

