"""Every GPU path of bench, run and timed on the accelerator at hand; one table of ratios and throughputs.

    python benchmarks/device_check.py                 # on a GPU: full sizes, designed for < 8 min on one H100
    python benchmarks/device_check.py --cpu-smoke     # the same code paths at tiny sizes on the CPU (CI runs it)
    python benchmarks/device_check.py --only knn,logreg

Without a GPU (and without --cpu-smoke) it says so in one line and exits 0. Each check runs bench's own code
(bench.protocols.knn, bench.protocols.logreg, bench.cache extraction, the 52-head linear grid, one detection and
one segmentation training iteration through bench's step and GradScaler, bench.distributed's process group under
torchrun) and, where the issue names one, the bare computation it is measured against:

- k-NN: 1.28M × 1024 float16 training features (host memory, as a memory-mapped file) vs 50k queries, k = 200:
  bench's chunked torch path (and faiss-gpu when installed) vs the bare matmul + topk on the features already on
  the device in float32. Goal: within 1.2×.
- logreg: 100k × 768, 1000 classes, the 45-C path in float64 on the GPU (goal < 5 min), and one C's fit on the CPU
  vs on the GPU (ratio; the two solutions agree to the solver's tolerance).
- extraction: ViT-B/16 and ResNet-50 at batch 256 with bf16 autocast: bench's extraction (DataLoader workers, pinned
  memory, channels_last, autocast, copy into the feature matrix) vs the bare forward of a device-resident batch under
  the same autocast. The images are in-memory tensors, so JPEG decoding is not part of either. Goal: ≥ 0.95.
- linear grid: DINOv2's 52 heads × 1000 classes on 1536-d cached features, `--grid-steps` steps of batch 1024 timed
  and projected to 10 epochs of ImageNet. Goal: under 1 hour.
- detection / segmentation: one Faster R-CNN C4 (ResNet-50, 2 images of 800 × 1066, fp16 + GradScaler) and one
  UPerNet ViT-B/16 (2 crops of 512², fp16 + GradScaler) training iteration through bench's own step.
- torchrun: one process joins the group bench.distributed chooses (NCCL on a GPU), all-reduces and steps a DDP model.

Sizes are the issue's (issue 35); --cpu-smoke shrinks every size so the whole script runs in seconds on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FULL = dict(knn_train=1_281_167, knn_dim=1024, knn_queries=50_000, knn_k=200, lr_n=100_000, lr_d=768,
            lr_classes=1000, lr_C=45, lr_exps=(-6, 5), lr_cpu_iter=20, extract_batch=256, extract_batches=12, extract_size=224,
            grid_heads=52, grid_d=1536, grid_classes=1000, grid_batch=1024, grid_steps=200, det_size=(800, 1066),
            seg_crop=512, archs=("vit_base_patch16_224", "resnet50"), det_arch="resnet50",
            seg_arch="vit_base_patch16_224", workers=8)
SMOKE = dict(knn_train=3000, knn_dim=32, knn_queries=100, knn_k=20, lr_n=300, lr_d=16, lr_classes=5, lr_C=3, lr_exps=(-2, 0),
             lr_cpu_iter=5, extract_batch=4, extract_batches=2, extract_size=32, grid_heads=4, grid_d=16,
             grid_classes=5, grid_batch=32, grid_steps=4, det_size=(96, 128), seg_crop=32,
             archs=("test_vit", "test_resnet"), det_arch="test_resnet", seg_arch="test_vit", workers=0)
IMAGENET_TRAIN = 1_281_167
CHECKS = ("knn", "logreg", "extraction", "grid", "detection", "segmentation", "torchrun")


@dataclass
class Row:
    check: str
    bench_s: float
    bare_s: float | None = None
    throughput: str = ""
    goal: str = ""

    def line(self) -> str:
        ratio = f"{self.bench_s / self.bare_s:.3f}" if self.bare_s else "—"
        bare = f"{self.bare_s:.3f}" if self.bare_s else "—"
        return f"| {self.check} | {self.bench_s:.3f} | {bare} | {ratio} | {self.throughput} | {self.goal} |"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


WARMUP = 1   # 0 in --cpu-smoke: there the paths matter, not the timings


def _timed(fn, device: torch.device, warmup: int = 1) -> float:
    for _ in range(min(warmup, WARMUP)):
        fn()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# -------------------------------------------------------------------------------------------------------- k-NN
def check_knn(s: dict, device: torch.device) -> list[Row]:
    import torch.nn.functional as F
    from bench.protocols.knn import _faiss, faiss_index_kind, knn_topk_neighbors
    g = torch.Generator().manual_seed(0)
    train = np.empty((s["knn_train"], s["knn_dim"]), dtype=np.float16)
    for a in range(0, len(train), 262_144):   # filled in chunks: no float32 copy of the whole matrix
        train[a:a + 262_144] = torch.randn(min(262_144, len(train) - a), s["knn_dim"], generator=g).numpy()
    queries = F.normalize(torch.randn(s["knn_queries"], s["knn_dim"], generator=g), dim=1).to(device)
    k = s["knn_k"]

    def ours(backend="torch"):
        return knn_topk_neighbors(train, queries, k, normalize=True, backend=backend)
    t_ours = _timed(ours, device, warmup=0 if device.type == "cpu" else 1)
    x = torch.empty(train.shape, dtype=torch.float32, device=device)
    for a in range(0, len(train), 262_144):
        x[a:a + 262_144] = F.normalize(torch.from_numpy(train[a:a + 262_144]).to(device).float(), dim=1)

    def bare():
        return [(queries[a:a + 1024] @ x.T).topk(k, dim=1) for a in range(0, len(queries), 1024)]
    t_bare = _timed(bare, device)
    same = torch.equal(ours()[1].cpu(), torch.cat([i for _, i in bare()]).cpu())
    del x
    rate = f"{s['knn_queries'] / t_ours:,.0f} queries/s; same neighbours as bare: {same}"
    rows = [Row(f"k-NN torch {s['knn_train']}×{s['knn_dim']} fp16, {s['knn_queries']} q", t_ours, t_bare, rate,
                "≤ 1.2× bare")]
    if _faiss() is not None:
        t_faiss = _timed(lambda: ours("faiss"), device, warmup=0)
        rows.append(Row(f"k-NN faiss {faiss_index_kind(device)}", t_faiss, t_bare,
                        f"{s['knn_queries'] / t_faiss:,.0f} queries/s", "chosen only if faster than torch"))
    return rows


# ------------------------------------------------------------------------------------------------------ logreg
def check_logreg(s: dict, device: torch.device) -> list[Row]:
    from bench.protocols.logreg import c_grid, fit_logreg, select_C
    g = torch.Generator().manual_seed(0)
    n, d, c = s["lr_n"], s["lr_d"], s["lr_classes"]
    centres = torch.randn(c, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    x = (centres[y] + 2.0 * torch.randn(n, d, generator=g)).numpy()
    ho = n // 10
    grid = c_grid(*s["lr_exps"], n=s["lr_C"])   # DINOv2's 10^linspace(-6, 5, 45)
    t_path = _timed(lambda: select_C(x[ho:], y[ho:].numpy(), x[:ho], y[:ho].numpy(), grid, num_classes=c,
                                     device=device, max_iter=1000, tol=1e-10), device, warmup=0)
    rows = [Row(f"logreg {len(grid)}-C path {n}×{d}, {c} classes, float64 on {device.type}", t_path, None,
                f"{len(grid) / t_path:.2f} C/s", "< 300 s")]
    # one C at a capped iteration count on both devices: same iterates, so the ratio is the device's
    it = s["lr_cpu_iter"]
    fits = {}

    def fit(dev):
        fits[dev.type] = fit_logreg(x, y.numpy(), 1.0, num_classes=c, device=dev, max_iter=it, tol=0.0)
    t_cpu = _timed(lambda: fit(torch.device("cpu")), torch.device("cpu"), warmup=0)
    t_dev = _timed(lambda: fit(device), device, warmup=0)
    diff = float((fits["cpu"].W - fits[device.type].W.cpu()).abs().max() / fits["cpu"].W.abs().max())
    rows.append(Row(f"logreg one C, {it} L-BFGS iterations: {device.type} vs cpu", t_dev, t_cpu,
                    f"max |ΔW| / max |W| = {diff:.1e}", "device < cpu; ΔW at solver tolerance"))
    return rows


# -------------------------------------------------------------------------------------------------- extraction
class _Images(torch.utils.data.Dataset):
    """In-memory images (one tensor shared by every index): the loader's cost without JPEG decoding."""

    def __init__(self, n: int, size: int):
        self.n, self.x = n, torch.rand(3, size, size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.x, 0


def check_extraction(s: dict, device: torch.device) -> list[Row]:
    from bench.backbones import load_backbone
    from bench.cache import _run_extraction
    from bench.precision import resolve_precision
    prec = resolve_precision("bf16", device)
    rows = []
    for arch in s["archs"]:
        bb = load_backbone(None, arch, seed=0)
        ds = _Images(s["extract_batch"] * s["extract_batches"], s["extract_size"])
        t_ours = _timed(lambda: _run_extraction(bb, ds, bb.feature_mode, batch_size=s["extract_batch"],
                                                workers=s["workers"], device=device, desc=arch, amp=prec), device)
        model = bb.model.to(device).eval().to(memory_format=torch.channels_last)
        batch = torch.rand(s["extract_batch"], 3, s["extract_size"], s["extract_size"], device=device)
        batch = batch.contiguous(memory_format=torch.channels_last)

        def bare():
            with torch.inference_mode(), prec.autocast():
                for _ in range(s["extract_batches"]):
                    bb.features(batch, bb.feature_mode)
        t_bare = _timed(bare, device)
        rows.append(Row(f"extraction {arch} batch {s['extract_batch']}, {prec.name}", t_ours, t_bare,
                        f"{len(ds) / t_ours:,.0f} img/s (bare {len(ds) / t_bare:,.0f})",
                        "≤ 1.05 (≥ 0.95 of bare's img/s)"))
    return rows


# --------------------------------------------------------------------------------------------------- grid heads
def check_grid(s: dict, device: torch.device) -> list[Row]:
    from bench.protocols._linear_grid import train_heads
    g = torch.Generator().manual_seed(0)
    n = s["grid_batch"] * s["grid_steps"]
    x = torch.randn(n, s["grid_d"], generator=g).to(device)
    y = torch.randint(0, s["grid_classes"], (n,), generator=g).to(device)
    lrs = list(np.geomspace(1e-5, 0.5, s["grid_heads"]))
    t = _timed(lambda: train_heads(x, y, lrs, [0.0] * len(lrs), num_classes=s["grid_classes"], epochs=1,
                                   batch_size=s["grid_batch"], device=device, progress=False), device)
    projected = t / n * IMAGENET_TRAIN * 10
    return [Row(f"linear grid {s['grid_heads']} heads × {s['grid_classes']}, {s['grid_d']}-d, {s['grid_steps']} "
                f"steps", t, None, f"{n / t:,.0f} rows/s → 10 ImageNet epochs {projected / 60:.1f} min",
                "10 epochs < 60 min")]


# ------------------------------------------------------------------------------------- detection / segmentation
def check_detection(s: dict, device: torch.device) -> list[Row]:
    from bench.backbones import load_backbone
    from bench.presets import resolve_preset
    from bench.protocols._detection_engine import _step, preset_precision
    from bench.protocols._detection_model import build_detector
    from bench.protocols.detection import DetectionPreset
    from bench.protocols.detection import QUICK_SETTINGS
    # the preset's own fp16 + GradScaler on a GPU; the smoke run enters the same (disabled) autocast and scaler in
    # float32 with --quick's RPN / RoI sizes: CPU float16 / bfloat16 convolutions are many times slower than
    # float32 there (tests/test_precision.py runs them in bf16 and fp16 on the miniatures)
    smoke = device.type == "cpu"
    preset = resolve_preset("detection", DetectionPreset, None, {})[0]
    preset = dataclasses.replace(preset, **QUICK_SETTINGS) if smoke else preset
    prec = preset_precision(preset, device, "off" if smoke else "fp16")
    bb = load_backbone(None, s["det_arch"], seed=0)
    model = build_detector(bb.model, preset, mean=bb.preprocessing.mean, std=bb.preprocessing.std).to(device)
    model.train()
    h, w = s["det_size"]
    images = [torch.rand(3, h, w) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, w / 2, h / 2], [w / 3, h / 4, w - 5.0, h - 5.0]]),
                "labels": torch.tensor([1, 7])} for _ in images]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    scaler = prec.grad_scaler()
    t = _timed(lambda: _step(model, images, targets, opt, sched, scaler, device, prec, 0), device)
    return [Row(f"detection iteration ({preset.head}, {s['det_arch']}, 2 × {h}×{w}, {prec.name})", t, None,
                f"{2 / t:.1f} img/s", "")]


def check_segmentation(s: dict, device: torch.device) -> list[Row]:
    from bench.backbones import load_backbone
    from bench.precision import resolve_precision
    from bench.presets import resolve_preset
    from bench.protocols._segmentation_train import _loss
    from bench.protocols.segmentation import SegPreset, build_seg_model
    from bench.train import scaled_step
    preset = resolve_preset("segmentation", SegPreset, None, {})[0]
    prec = resolve_precision("off" if device.type == "cpu" else "fp16", device)   # as check_detection
    if device.type == "cpu":   # test_vit has 6 blocks
        preset = dataclasses.replace(preset, out_indices=(1, 2, 3, 5))
    bb = load_backbone(None, s["seg_arch"], seed=0)
    crop = s["seg_crop"]
    channels = 512 if crop >= 256 else 16
    model = build_seg_model(bb, preset, crop, channels).to(device).train()
    x = torch.rand(2, 3, crop, crop, device=device)
    y = torch.randint(0, preset.num_classes, (2, crop, crop), device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    scaler = prec.grad_scaler()

    def step():
        with prec.autocast():
            loss = _loss(model, x, y, preset.aux_weight)
        scaled_step(loss, opt, scaler)
    t = _timed(step, device)
    return [Row(f"segmentation iteration ({preset.head}, {s['seg_arch']}, 2 × {crop}², {prec.name})", t, None,
                f"{2 / t:.1f} img/s", "")]


# ------------------------------------------------------------------------------------------------------ torchrun
def _torchrun_child(device_type: str) -> None:
    import torch.distributed as dist
    from bench.distributed import backend_for
    backend = backend_for(device_type)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    device = torch.device(device_type, torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.ones(4, device=device)
    dist.all_reduce(t)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Linear(8, 2).to(device), device_ids=[device.index] if backend == "nccl" else None)
    model(torch.randn(4, 8, device=device)).sum().backward()
    dist.barrier()
    print(f"backend={dist.get_backend()} world={dist.get_world_size()} all_reduce={t.tolist()} ddp_step=ok")
    dist.destroy_process_group()


def check_torchrun(s: dict, device: torch.device) -> list[Row]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          __file__, "--torchrun-child", device.type], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    t = time.perf_counter() - start
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("backend=")), "")
    if out.returncode or not line:
        raise RuntimeError(f"torchrun exited {out.returncode}: {(out.stderr or out.stdout).strip()[-500:]}")
    return [Row("torchrun, 1 process", t, None, line, "nccl on a GPU")]


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: the code paths, not a timing")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--grid-steps", type=int, help="linear-grid steps to time (default 200)")
    p.add_argument("--torchrun-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torchrun_child:
        _torchrun_child(args.torchrun_child)
        return 0
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("device_check: no GPU found (torch.cuda.is_available() is False); nothing measured "
              "(--cpu-smoke runs the same code paths at tiny sizes on the CPU)")
        return 0
    only = [c for c in args.only.split(",") if c]
    unknown = set(only) - set(CHECKS)
    if unknown:
        p.error(f"--only: unknown check(s) {sorted(unknown)}; choose from {','.join(CHECKS)}")
    sizes = dict(SMOKE if args.cpu_smoke else FULL)
    global WARMUP
    WARMUP = 0 if args.cpu_smoke else 1
    if args.grid_steps:
        sizes["grid_steps"] = args.grid_steps
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    os.environ.setdefault("BENCH_PROGRESS", "0")
    from _util import machine
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke sizes: paths, not timings)"
    print(f"device_check on {name}; {machine()}")
    rows, failed, start = [], [], time.perf_counter()
    for check in only:
        t0 = time.perf_counter()
        try:
            rows += globals()[f"check_{check}"](sizes, device)
        except Exception as e:   # one broken path must not hide the others' numbers
            failed.append(check)
            rows.append(Row(f"{check}: FAILED {type(e).__name__}: {str(e)[:200]}", time.perf_counter() - t0))
        print(f"  {check} done in {time.perf_counter() - t0:.1f} s", flush=True)
    print("\n| check | bench s | bare s | bench / bare | throughput | goal |\n|---|---|---|---|---|---|")
    print("\n".join(r.line() for r in rows))
    print(f"\ntotal {time.perf_counter() - start:.1f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
