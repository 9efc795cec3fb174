"""Run a `bench` command as a cluster job through submitit: one job per run, records written as usual.

`--launcher slurm` submits to SLURM (partition, GPUs, time from flags); `--launcher submitit-local` runs the
same job through submitit's local executor (what the tests use, and handy for checking a job before
submitting it). Inside a job with several GPUs, every task joins one torch.distributed group.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ._argtypes import POSITIVE_INT
from .errors import BenchError

__all__ = ["add_launcher_args", "strip_launcher_args", "submit"]

_logger = logging.getLogger(__name__)
LAUNCHER_FLAGS = {"--launcher": 1, "--partition": 1, "--gpus": 1, "--time": 1, "--job-dir": 1, "--wait": 0,
                  "--cpus-per-task": 1, "--mem-gb": 1}


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("launcher")
    g.add_argument("--launcher", choices=["none", "slurm", "submitit-local"], default="none",
                   help="run here (none), as a SLURM job, or through submitit's local executor")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--gpus", type=POSITIVE_INT, default=1, help="GPUs (= tasks) per job (default 1)")
    g.add_argument("--time", type=POSITIVE_INT, default=240, help="job time limit in minutes (default 240)")
    g.add_argument("--cpus-per-task", type=POSITIVE_INT, default=10)
    g.add_argument("--mem-gb", type=POSITIVE_INT, default=64)
    g.add_argument("--job-dir", default="results/jobs", help="submitit logs and pickles (default results/jobs)")
    g.add_argument("--wait", action="store_true", help="wait for the job and return its exit status")


def strip_launcher_args(argv: list[str]) -> list[str]:
    """The same command line without the launcher flags: what the job itself runs."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in LAUNCHER_FLAGS:
            skip = 0 if "=" in a else LAUNCHER_FLAGS[name]
            continue
        out.append(a)
    return out


class _Job:
    """Picklable callable that submitit runs on the node."""

    def __init__(self, argv: list[str], distributed: bool):
        self.argv, self.distributed = argv, distributed

    def __call__(self) -> int:
        if self.distributed:
            import submitit.helpers
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        from .cli import main
        code = main(self.argv)
        if code != 0:
            raise BenchError(f"bench {' '.join(self.argv)} exited with {code}; see the job's stderr log")
        return code


def _drop_unformatted(job_dir: str) -> None:
    """submitit also makes the unformatted `%j` folder; once it is empty (files move to the job's id), drop it."""
    literal = Path(job_dir) / "%j"
    if literal.is_dir() and not any(literal.iterdir()):
        literal.rmdir()


def submit(argv: list[str], args: argparse.Namespace) -> int:
    cluster = "slurm" if args.launcher == "slurm" else "local"
    if cluster == "slurm" and not args.partition:
        raise BenchError("--launcher slurm needs --partition NAME")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise BenchError("--launcher slurm needs SLURM's sbatch on PATH (none here); on one machine use "
                         "--launcher submitit-local")
    try:
        import submitit
    except ImportError as e:
        raise BenchError("--launcher needs submitit: pip install 'bench[slurm]' (or pip install submitit)") from e
    folder = Path(args.job_dir) / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": args.time, "tasks_per_node": args.gpus, "nodes": 1, "name": "bench"}
    if cluster == "slurm":
        params.update(slurm_partition=args.partition, gpus_per_node=args.gpus, cpus_per_task=args.cpus_per_task,
                      mem_gb=args.mem_gb)
    executor.update_parameters(**params)
    job_argv = strip_launcher_args(argv)
    job = executor.submit(_Job(job_argv, distributed=args.gpus > 1))
    _drop_unformatted(args.job_dir)
    print(f"submitted job {job.job_id} ({cluster}): bench {' '.join(job_argv)}; logs in {Path(args.job_dir)}")
    if not args.wait:
        return 0
    try:
        code = int(job.result())
        _drop_unformatted(args.job_dir)
        # the job's own output (metrics, record path) as a local run prints it, without submitit's log lines
        print("".join(l for l in (job.stdout() or "").splitlines(True) if not l.startswith("submitit ")), end="")
        return code
    except Exception as e:  # submitit wraps the job's exception in its own FailedJobError
        msg = str(e).strip().splitlines()
        raise BenchError(f"job {job.job_id} failed: {msg[-1] if msg else e}") from None
