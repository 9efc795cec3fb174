"""What each SSL family needs beyond its weights: input normalisation, interpolation, model arguments, and the
feature its paper's linear probe read. Facts and sources: research/checkpoints.md (one section per family).

A family is named by the layout from the file's keys; `checkpoints.yaml` may name it more precisely (e.g. a flat
ViT file is "timm-vit" from its keys but "dino" when loaded as `dino_vits16`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .._registry import Registry

__all__ = ["Family", "FAMILIES", "family_spec", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _by_kind(vit: str, cnn: str = "pool") -> Callable[[str, int], str]:
    return lambda kind, width: cnn if kind == "resnet" else vit


def _dino_mode(kind: str, width: int) -> str:
    # eval_linear.py: ViT-S n_last_blocks=4 avgpool=False; ViT-B n_last_blocks=1 avgpool=True (interleaved).
    if kind == "resnet":
        return "pool"
    return "last4-cls" if width <= 384 else "cls+avgpool-interleaved"


def _ibot_mode(kind: str, width: int) -> str:
    # iBOT run.sh: ViT-S 4×CLS; ViT-B/L `avgpool=2` = cat[CLS, mean(patch)], not interleaved.
    return "last4-cls" if width <= 384 else "cls+avgpool"


@dataclass(frozen=True)
class Family:
    name: str
    source: str                                     # where the facts come from
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    feature_mode: Callable[[str, int], str] = field(default=_by_kind("cls"))
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # convolutions and max-pool padded like TF/Haiku 'SAME' (asymmetric for stride 2), as the network was trained
    tf_same_padding: bool = False
    # the architecture's own timm pretrained_cfg (mean, std, interpolation) rather than this family's
    own_preprocessing: bool = False

    def preprocessing(self) -> dict[str, Any]:
        if self.own_preprocessing:
            return {}
        return {"mean": self.mean, "std": self.std, "interpolation": self.interpolation}


FAMILIES: Registry[Family] = Registry("checkpoint family")


def _add(fam: Family) -> None:
    FAMILIES.register(fam.name, fam)


_BICUBIC = "bicubic"
for _f in [
    Family("timm-vit", "timm ViT defaults (flat file: the method is not in the keys)", interpolation=_BICUBIC),
    Family("torchvision-resnet", "torchvision references: Resize 256 → crop 224, bilinear"),
    Family("torchvision-supervised", "torchvision AlexNet / VGG ImageNet classifiers: Resize 256 → crop 224, bilinear"),
    Family("mae", "facebookresearch/mae main_linprobe.py: CLS after norm", interpolation=_BICUBIC),
    Family("mae-finetuned", "facebookresearch/mae models_vit.py global_pool: fc_norm(mean patches)",
           interpolation=_BICUBIC, feature_mode=_by_kind("pool")),
    Family("dino", "facebookresearch/dino eval_linear.py", interpolation=_BICUBIC, feature_mode=_dino_mode),
    Family("ibot", "bytedance/ibot run.sh / evaluation/eval_linear.py", interpolation=_BICUBIC,
           feature_mode=_ibot_mode),
    Family("dino-or-ibot", "teacher/student checkpoint without dino_loss/ibot_loss", interpolation=_BICUBIC,
           feature_mode=_dino_mode),
    Family("dinov2", "facebookresearch/dinov2 hub/classifiers.py: cat[CLS, mean(patch)]", interpolation=_BICUBIC,
           feature_mode=_by_kind("cls+avgpool")),
    Family("beit", "microsoft/unilm beit: v1 pretraining normalised with mean=std=0.5", mean=(0.5, 0.5, 0.5),
           std=(0.5, 0.5, 0.5), interpolation=_BICUBIC, feature_mode=_by_kind("cls+avgpool")),
    Family("beit-finetuned", "microsoft/unilm beit run_class_finetuning.py: mean=std=0.5 (imagenet_default_mean_and_"
           "std off); the classifier reads fc_norm(mean of patch tokens)", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
           interpolation=_BICUBIC, feature_mode=_by_kind("pool")),
    Family("simmim", "microsoft/SimMIM data_finetune.py: ImageNet mean/std, bicubic Resize 256/224 + crop; without "
           "mean pooling the ViT head reads the normed CLS (vision_transformer.py)", interpolation=_BICUBIC,
           feature_mode=_by_kind("cls", "pool")),
    Family("simmim-finetuned", "microsoft/SimMIM vision_transformer.py USE_MEAN_POOLING: fc_norm(mean of patch "
           "tokens), ImageNet mean/std (data_finetune.py)", interpolation=_BICUBIC, feature_mode=_by_kind("pool")),
    Family("beit-v2", "microsoft/unilm beit2: ImageNet mean/std", interpolation=_BICUBIC,
           feature_mode=_by_kind("cls+avgpool")),
    Family("data2vec", "facebookresearch/data2vec_vision --imagenet_default_mean_and_std", interpolation=_BICUBIC,
           feature_mode=_by_kind("cls+avgpool")),
    Family("moco-v1/v2", "facebookresearch/moco main_lincls.py: avgpool, Resize 256 bilinear"),
    # vits.py: every MoCo v3 ViT has 12 heads, including ViT-S (timm's vit_small has 6; moco-v3#7).
    Family("moco-v3", "facebookresearch/moco-v3 main_lincls.py / vits.py", model_kwargs={"vit": {"num_heads": 12}}),
    Family("simsiam", "facebookresearch/simsiam main_lincls.py"),
    Family("swav", "facebookresearch/swav eval_linear.py: std 0.228 (sic)", std=(0.228, 0.224, 0.225)),
    Family("deepcluster-v2/sela-v2", "facebookresearch/swav eval_linear.py: std 0.228 (sic)",
           std=(0.228, 0.224, 0.225)),
    Family("deepcluster", "facebookresearch/deepcluster eval_linear.py: ImageNet mean/std before the Sobel layer; "
           "conv trunk, global average of the last conv map", feature_mode=_by_kind("pool")),
    Family("barlow-twins/vicreg", "facebookresearch/barlowtwins evaluate.py, facebookresearch/vicreg evaluate.py"),
    Family("vissl", "facebookresearch/vissl benchmark configs: ImageNet mean/std"),
    Family("simclr", "google-research/simclr data_util.py: input in [0,1], no mean/std; bicubic centre crop",
           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation=_BICUBIC),
    # Haiku convolutions pad 'SAME': a stride-2 conv on an even input pads (0, 1), torch's padding=1 pads (1, 1);
    # ajtejankar/byol-convert's resnet.py applies the same pad_same before every conv and the max-pool.
    Family("byol", "deepmind byol: ImageNet mean/std, centre crop 0.875; Haiku 'SAME' padding",
           interpolation=_BICUBIC, tf_same_padding=True),
    Family("lightning", "solo-learn main_linear.py strips backbone."),
    Family("esvit", "microsoft/esvit eval_linear.py: ImageNet mean/std, Resize 256 bicubic + crop 224; bench reads "
           "the Swin's own pooled final stage (its paper's probe concatenates the last blocks' pools)",
           interpolation=_BICUBIC),
    Family("lightly", "lightly-ai/lightly: nn.Sequential(*resnet.children()[:-1]) backbone; IMAGENET_NORMALIZE"),
    Family("mmselfsup", "open-mmlab mmselfsup/mmpretrain backbone."),
    Family("ddp-wrapped", "flat state dict saved from DistributedDataParallel (module. prefix)"),
    Family("timm-arch", "--arch NAME on a file of no recognised layout: timm's checkpoint filter for NAME; the "
           "arch's own pretrained_cfg normalisation; the feature its classifier reads", own_preprocessing=True),
    Family("timm-pretrained", "timm's published weights (--model arch.tag / hf-hub:): the model's own pretrained_cfg"),
    Family("bench-convert", "a file written by `bench convert` (its metadata carries the original report)"),
]:
    _add(_f)


def family_spec(name: str) -> Family:
    return FAMILIES.get(name)
