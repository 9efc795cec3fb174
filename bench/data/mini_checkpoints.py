"""Reference miniature checkpoints: small backbones trained on the miniature ImageNet, in their publishers' layouts.

A benchmark must rank a trained backbone above a random one; these are the trained backbones the validity tests
and the regression pins (`results/expected/`) run on. Each is trained here on CPU, seeded and deterministic, and
saved exactly as its publisher's training script saves its checkpoint, so it goes through the same loading path
as a downloaded file (`--ckpt mini_mocov2_resnet18`, `bench inspect`, the leaderboard):

| registry name               | objective                             | file layout (publisher's save code)             |
|-----------------------------|---------------------------------------|-------------------------------------------------|
| mini_supervised_resnet18    | cross-entropy on the 10 classes       | torchvision: bare state dict with `fc.`         |
| mini_mocov2_resnet18        | MoCo v2 (queue, momentum key encoder, | moco `main_moco.py`: `epoch`, `arch`,          |
|                             | MLP head, T 0.2, shuffled-BN groups)  | `state_dict` (`module.encoder_q/k.`, queue),   |
|                             |                                       | `optimizer`                                     |
| mini_mae_vit_tiny16         | MAE (75% masking, norm-pix loss,      | mae `main_pretrain.py` / `misc.save_model`:    |
|                             | 2-block decoder, fixed sin-cos pos.)  | `model` (encoder, `mask_token`, `decoder_*`),  |
|                             |                                       | `optimizer`, `epoch`, `args` (Namespace)       |

(A DINO ViT was tried first: in the CPU budget its loss stays at ln K. MAE's reconstruction loss falls in the same
budget, but its features are not yet useful: k-NN top-1 on the miniature 10.6% (CLS; 10.3% average-pooled) against
a random ViT-Ti's 12.2%, both near chance at 16 patches per 64-px image. So no pin or validity test runs on the
ViT: it exists to carry MAE's file layout through `--ckpt` into every protocol. The ResNets are the trained
references.)

Training runs on the 1,437 training images only (never the validation split the protocols score), on
tensors held in memory with batched random-resized crops (`grid_sample`), at a fixed thread count so the same
library versions on the same CPU give the same file whatever `OMP_NUM_THREADS` says. All three take about
3-4 minutes on 2 cores. Files land in `<cache>/checkpoints/` under the file names of their `checkpoints.yaml`
entries (url `mini:<name>`), written atomically.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["MINI_CHECKPOINTS", "MINI_CKPT_VERSION", "ensure_mini_checkpoint", "train_mini_checkpoints"]

_logger = logging.getLogger(__name__)

# Bump when the training recipe or the miniature ImageNet changes: the file names carry it, so stale files from
# an older recipe are never picked up.
MINI_CKPT_VERSION = 3
TRAIN_THREADS = 2          # fixed: float reduction order (and so every weight) must not follow OMP_NUM_THREADS
SOURCE_RES = 32            # the miniature's JPEGs
TRAIN_RES = 64             # what the protocols evaluate the miniatures at (--resolution default)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MiniCheckpoint:
    name: str
    arch: str
    train: Callable[[Path, int], None]
    description: str


# ------------------------------------------------------------------------------------------------ data helpers

def _train_images(cache: Path | None = None):
    """(N, 3, 32, 32) uint8 and (N,) int64 labels of the miniature ImageNet's train split, in file order."""
    import torch
    from PIL import Image
    from torchvision.datasets import ImageFolder

    from . import cache_dir
    from .mini import ensure_mini
    root = ensure_mini(Path(cache or cache_dir()) / "mini") / "imagenet" / "train"
    ds = ImageFolder(str(root))
    imgs = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p, _ in ds.samples])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.tensor([y for _, y in ds.samples])


def _normalise(x):
    import torch
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def random_resized_crop(x, out: int, scale: tuple[float, float], gen, ratio=(3 / 4, 4 / 3), flip: bool = False):
    """Per-sample random-resized crops of a batch (torchvision's distribution of area and log-ratio), resampled
    bilinearly to `out` px in one `grid_sample` call instead of a Python loop over images."""
    import torch
    import torch.nn.functional as F
    n = x.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=gen)
    logr = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    sx = w * (torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if flip else 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta, (n, 3, out, out), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _jitter(x, gen, strength: float = 0.4):
    """Per-sample brightness/contrast jitter and a random tint: the digits are grey, so this is the colour part of
    the SimCLR/MoCo v2/DINO augmentation that still says something here."""
    import torch
    n = x.shape[0]
    b = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * strength
    c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * strength
    tint = 1 + (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1) * strength / 2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean) * b * tint


def _colour_shuffle(x, gen, p_gray: float, p_permute: float):
    """MoCo v2's RandomGrayscale(p) and, with probability `p_permute`, a random order of the colour channels (a
    hue change as large as it gets): the miniature's digits are randomly coloured, so colour alone tells its images
    apart and a small network learns nothing else unless colour is taken away from it."""
    import torch
    n = x.shape[0]
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(n)])
    permute = torch.rand(n, generator=gen) < p_permute
    idx = torch.where(permute[:, None], perms, torch.arange(3).expand(n, 3))
    x = torch.gather(x, 1, idx[:, :, None, None].expand_as(x))
    gray = (torch.rand(n, generator=gen) < p_gray)[:, None, None, None]
    return torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)


def _batches(n: int, batch: int, gen):
    import torch
    perm = torch.randperm(n, generator=gen)
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]     # drop_last, as the papers' loaders


@contextlib.contextmanager
def _fixed_threads(n: int):
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _progress(total: int, desc: str):
    """One bar over a training run's steps, with its rate and the time left: training a reference checkpoint takes
    minutes on a CPU, and they must never be silent ones."""
    import os

    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True,
                disable=os.environ.get("BENCH_PROGRESS", "1") == "0")


def _cosine(step: int, total: int, base: float, final: float = 0.0, warmup: int = 0) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))


def _save(obj, dest: Path) -> None:
    import io

    import torch

    from .._io import atomic_write_bytes
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(dest, buf.getvalue())


# ------------------------------------------------------------------------------------------------ supervised

def train_supervised(dest: Path, seed: int, epochs: int = 6, batch: int = 64, lr: float = 0.1,
                     arch: str = "resnet18") -> None:
    """torchvision-style supervised ResNet: SGD + momentum, cosine, random-resized crops; saved as torchvision
    publishes its weights (a bare state dict, classifier `fc.` included). resnet18 is torchvision's model (the
    recipe the pins were measured with); another name is timm's."""
    import torch
    import torch.nn.functional as F
    import torchvision
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = _train_images(dest.parent.parent)
    if arch == "resnet18":
        model = torchvision.models.resnet18(num_classes=int(y.max()) + 1)
    else:
        import timm
        model = timm.create_model(arch, num_classes=int(y.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps = epochs * (len(x) // batch)
    step = 0
    model.train()
    bar = _progress(steps, f"train supervised {arch}")
    for _ in range(epochs):
        for idx in _batches(len(x), batch, gen):
            for g in opt.param_groups:
                g["lr"] = _cosine(step, steps, lr, warmup=len(x) // batch)
            v = random_resized_crop(_normalise(x[idx]), TRAIN_RES, (0.5, 1.0), gen)
            loss = F.cross_entropy(model(v), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update()
    bar.close()
    _logger.info("supervised %s: last loss %.3f", arch, loss.item())
    _save(model.state_dict(), dest)


# ------------------------------------------------------------------------------------------------ MoCo v2

def _moco_encoder(dim: int = 128, arch: str = "resnet18"):
    """moco/builder.py's encoder: the ResNet with its `fc` replaced by the v2 MLP head (hidden width = the
    feature width). resnet18 is torchvision's (the recipe the pins were measured with); other names are timm's."""
    import torch.nn as nn
    if arch == "resnet18":
        import torchvision
        enc = torchvision.models.resnet18(num_classes=dim)
    else:
        import timm
        enc = timm.create_model(arch, num_classes=dim)
    width = enc.fc.in_features
    enc.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), enc.fc)
    return enc


def _grouped(encoder, v, groups: int):
    """Forward in `groups` chunks with their own BN statistics: the single-process stand-in for the per-GPU batch
    norm MoCo relies on (its shuffle-BN stops BN statistics leaking the positive through the batch)."""
    import torch
    return torch.cat([encoder(c) for c in v.chunk(groups)])


def train_mocov2(dest: Path, seed: int, epochs: int = 4, batch: int = 64, lr: float = 0.06, queue: int = 1024,
                 t: float = 0.2, m: float = 0.99, groups: int = 4, arch: str = "resnet18",
                 keep_optimizer: bool = True, p_gray: float = 0.0, p_permute: float = 0.0) -> None:
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, _ = _train_images(dest.parent.parent)
    enc_q, enc_k = _moco_encoder(arch=arch), _moco_encoder(arch=arch)
    enc_k.load_state_dict(enc_q.state_dict())
    for p in enc_k.parameters():
        p.requires_grad = False
    qbuf = F.normalize(torch.randn(128, queue, generator=gen), dim=0)
    ptr = 0
    opt = torch.optim.SGD(enc_q.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * (len(x) // batch)
    step = 0
    bar = _progress(steps, f"train MoCo v2 {arch}")
    for _ in range(epochs):
        for idx in _batches(len(x), batch, gen):
            for g in opt.param_groups:
                g["lr"] = _cosine(step, steps, lr)
            xb = _normalise(x[idx])
            v1 = _jitter(random_resized_crop(xb, TRAIN_RES, (0.2, 1.0), gen), gen)
            v2 = _jitter(random_resized_crop(xb, TRAIN_RES, (0.2, 1.0), gen), gen)
            if p_gray or p_permute:    # off for the resnet18 recipe: its weights (and the pins) stay as they were
                v1, v2 = (_colour_shuffle(v, gen, p_gray, p_permute) for v in (v1, v2))
            q = F.normalize(_grouped(enc_q, v1, groups), dim=1)
            with torch.no_grad():
                for pq, pk in zip(enc_q.parameters(), enc_k.parameters()):
                    pk.mul_(m).add_(pq.detach(), alpha=1 - m)
                shuffle = torch.randperm(len(v2), generator=gen)
                k = F.normalize(_grouped(enc_k, v2[shuffle], groups), dim=1)[torch.argsort(shuffle)]
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ qbuf], dim=1) / t
            loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            qbuf[:, ptr:ptr + len(k)] = k.T
            ptr = (ptr + len(k)) % queue
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    _logger.info("mocov2 %s: last loss %.3f", arch, loss.item())
    # main_moco.py's save_checkpoint of a DDP-wrapped MoCo module
    sd = {**{f"module.encoder_q.{k}": v for k, v in enc_q.state_dict().items()},
          **{f"module.encoder_k.{k}": v for k, v in enc_k.state_dict().items()},
          "module.queue": qbuf.clone(), "module.queue_ptr": torch.tensor([ptr], dtype=torch.long)}
    # the packaged file leaves out the optimizer's momentum buffers (nothing reads them; they would double its size)
    _save({"epoch": epochs, "arch": arch, "state_dict": sd,
            **({"optimizer": opt.state_dict()} if keep_optimizer else {})}, dest)


# ------------------------------------------------------------------------------------------------ MAE

def _sincos_2d(dim: int, grid: int):
    """MAE's fixed 2-D sin-cos position table (util/pos_embed.py), with the all-zero row of the CLS token."""
    import torch
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    gh, gw = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="xy")          # MAE: np.meshgrid(grid_w, grid_h), w first

    def emb(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    table = torch.cat([emb(gw), emb(gh)], dim=1)     # [h-half from grid[0], w-half from grid[1]] as in MAE
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()[None]


def _mae_model(img: int, patch: int = 16, dec_dim: int = 128, dec_depth: int = 2, dec_heads: int = 4):
    """MAE's MaskedAutoencoderViT (models_mae.py) around timm's ViT-Ti/16 encoder, with MAE's parameter names:
    the encoder's, then mask_token, decoder_embed, decoder_pos_embed, decoder_blocks, decoder_norm, decoder_pred."""
    import timm
    import torch
    import torch.nn as nn
    from timm.models.vision_transformer import Block

    class MaskedAutoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            vit = timm.create_model("vit_tiny_patch16_224", img_size=img, num_classes=0)
            dim, self.patch, self.grid = vit.embed_dim, patch, img // patch
            self.cls_token, self.patch_embed, self.blocks, self.norm = vit.cls_token, vit.patch_embed, vit.blocks, \
                vit.norm
            self.pos_embed = nn.Parameter(_sincos_2d(dim, self.grid), requires_grad=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
            self.decoder_embed = nn.Linear(dim, dec_dim)
            self.decoder_pos_embed = nn.Parameter(_sincos_2d(dec_dim, self.grid), requires_grad=False)
            self.decoder_blocks = nn.ModuleList(Block(dec_dim, dec_heads, 4.0, qkv_bias=True) for _ in range(dec_depth))
            self.decoder_norm = nn.LayerNorm(dec_dim)
            self.decoder_pred = nn.Linear(dec_dim, patch * patch * 3)
            nn.init.normal_(self.mask_token, std=0.02)
            nn.init.normal_(self.cls_token, std=0.02)

        def patchify(self, x):
            n, p, g = x.shape[0], self.patch, self.grid
            return x.reshape(n, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(n, g * g, p * p * 3)

        def forward(self, x, mask_ratio: float, gen):
            tokens = self.patch_embed(x) + self.pos_embed[:, 1:]
            n, length, dim = tokens.shape
            keep = int(length * (1 - mask_ratio))
            order = torch.argsort(torch.rand(n, length, generator=gen), dim=1)    # per-sample random masking
            restore = torch.argsort(order, dim=1)
            kept = torch.gather(tokens, 1, order[:, :keep, None].expand(-1, -1, dim))
            z = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1), kept], dim=1)
            for blk in self.blocks:
                z = blk(z)
            z = self.decoder_embed(self.norm(z))
            full = torch.cat([z[:, 1:], self.mask_token.expand(n, length - keep, -1)], dim=1)
            full = torch.gather(full, 1, restore[:, :, None].expand(-1, -1, full.shape[2]))
            y = torch.cat([z[:, :1], full], dim=1) + self.decoder_pos_embed
            for blk in self.decoder_blocks:
                y = blk(y)
            pred = self.decoder_pred(self.decoder_norm(y))[:, 1:]
            target = self.patchify(x)
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
            mask = torch.ones(n, length)
            mask[:, :keep] = 0
            mask = torch.gather(mask, 1, restore)
            return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()    # norm_pix_loss, masked only

    return MaskedAutoencoder()


def train_mae(dest: Path, seed: int, epochs: int = 10, batch: int = 64, blr: float = 1.5e-4,
              mask_ratio: float = 0.75, warmup: int = 3) -> None:
    """MAE pre-training (main_pretrain.py's recipe: AdamW betas (0.9, 0.95), wd 0.05, lr = blr x batch / 256,
    cosine with warmup, random-resized crop (0.2, 1) + flip, norm_pix_loss), saved as misc.save_model does."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, _ = _train_images(dest.parent.parent)
    model = _mae_model(TRAIN_RES)
    lr = blr * batch / 256
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    per_epoch = len(x) // batch
    steps, step = epochs * per_epoch, 0
    model.train()
    bar = _progress(steps, "train MAE vit_tiny")
    for _ in range(epochs):
        for idx in _batches(len(x), batch, gen):
            for g in opt.param_groups:
                g["lr"] = _cosine(step, steps, lr, warmup=warmup * per_epoch)
            v = random_resized_crop(_normalise(x[idx]), TRAIN_RES, (0.2, 1.0), gen, flip=True)
            loss = model(v, mask_ratio, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update()
    bar.close()
    _logger.info("mae vit_tiny: last loss %.3f", loss.item())
    args = argparse.Namespace(model="mae_vit_tiny_patch16", input_size=TRAIN_RES, mask_ratio=mask_ratio,
                              norm_pix_loss=True, batch_size=batch, epochs=epochs, blr=blr, lr=lr,
                              weight_decay=0.05, warmup_epochs=warmup, seed=seed,
                              data_path="<bench miniature imagenet/train>")
    _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epochs - 1, "args": args}, dest)


MINI_CHECKPOINTS: dict[str, MiniCheckpoint] = {c.name: c for c in (
    MiniCheckpoint("mini_supervised_resnet18", "resnet18", train_supervised,
                   "supervised (cross-entropy) ResNet-18, torchvision layout"),
    MiniCheckpoint("mini_mocov2_resnet18", "resnet18", train_mocov2, "MoCo v2 ResNet-18, moco main_moco.py layout"),
    MiniCheckpoint("mini_mae_vit_tiny16", "vit_tiny_patch16_224", train_mae,
                   "MAE ViT-Ti/16 with its decoder, mae main_pretrain.py layout"),
)}


# Shipped inside the package (bench/_data/checkpoints/, checkpoints.yaml url `package:<file>`), so that
# `bench run --protocol P` with no backbone evaluates a trained network at once: timm's 0.37M-parameter
# `test_resnet` (ResNet basic blocks, widths 32-48-48-96, deep stem), small enough to ship (< 4 MB) and to
# evaluate in seconds on a CPU. Its recipe differs from the ResNet-18's in two ways, both recorded here: MoCo v2's
# RandomGrayscale (p 0.2) plus a random colour-channel order (p 0.8) — the miniature's digits are randomly coloured,
# and without taking colour away this small network learns only colour (k-NN top-1 at chance after 12 epochs) — and
# one training thread (identical files from any OMP_NUM_THREADS; two threads were ~10x slower on a busy 2-core
# machine). Rebuild it with `python -m bench.data.mini_checkpoints --packaged` (then copy the printed sha256 into
# checkpoints.yaml).
PACKAGED = {
    "mini_mocov2_test_resnet": dict(epochs=36, arch="test_resnet", p_gray=0.2, p_permute=0.8, keep_optimizer=False),
}
PACKAGED_THREADS = 1


def build_packaged(name: str, dest: Path, cache: Path | None = None, seed: int = 0) -> Path:
    """Train the packaged checkpoint `name` (its miniature ImageNet in `cache`) and write it to `dest`."""
    import tempfile

    from .._io import atomic_write_bytes
    with tempfile.TemporaryDirectory(prefix="bench-packaged-") as tmp:
        work = Path(cache or tmp) / "checkpoints" / dest.name
        work.parent.mkdir(parents=True, exist_ok=True)
        with _fixed_threads(PACKAGED_THREADS):
            train_mocov2(work, seed, **PACKAGED[name])
        atomic_write_bytes(dest, work.read_bytes())
    return dest


def _main(argv: list[str] | None = None) -> int:
    import argparse as ap

    from .._io import sha256_file
    from ..backbones.zoo import get_entry, packaged_file
    p = ap.ArgumentParser(prog="python -m bench.data.mini_checkpoints",
                          description="train the reference miniature checkpoints (into the cache), or rebuild the "
                                      "ones shipped inside the package (--packaged)")
    p.add_argument("--packaged", action="store_true", help="rebuild bench/_data/checkpoints/* and print sha256")
    p.add_argument("--cache", type=Path, help="bench cache holding the miniatures (default $BENCH_CACHE)")
    args = p.parse_args(argv)
    if not args.packaged:
        for name, path in train_mini_checkpoints(args.cache).items():
            print(f"{name}: {path}")
        return 0
    for name in PACKAGED:
        dest = packaged_file(get_entry(name))
        build_packaged(name, dest, args.cache)
        print(f"{name}: {dest} sha256 {sha256_file(dest)} (checkpoints.yaml: {name}.sha256)")
    return 0


def ensure_mini_checkpoint(name: str, dest: Path, seed: int = 0) -> Path:
    """Train `name` into `dest` unless it is there (a finished file: writes are atomic)."""
    spec = MINI_CHECKPOINTS[name]
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _logger.info("training the reference miniature checkpoint %s (%s) → %s", name, spec.description, dest)
    with _fixed_threads(TRAIN_THREADS):
        spec.train(dest, seed)
    _logger.info("%s trained in %.0f s", name, time.time() - t0)
    return dest


def train_mini_checkpoints(cache: Path | None = None, names: list[str] | None = None) -> dict[str, Path]:
    """Every reference miniature checkpoint (trained unless cached), through the registry like any `--ckpt NAME`."""
    from ..backbones.zoo import fetch_checkpoint
    return {n: fetch_checkpoint(n, cache)[0] for n in names or MINI_CHECKPOINTS}


if __name__ == "__main__":
    raise SystemExit(_main())
