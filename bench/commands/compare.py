"""bench compare A B: the paired difference of two records' headline metric, its interval, p-value and verdict.

A and B are record files (results/runs/*.json), run ids, or — with --protocol — two checkpoints (or --model
names) that are run first (an existing record is reused, as `bench run` does). With --out, the comparison is
also written to OUT/compare/<name>.json and .md, which `bench site` shows.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .._argtypes import SEED
from ..errors import BenchError

HELP = "paired comparison of two records (or two checkpoints under one protocol): Δ, interval, p-value, verdict"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help=HELP, description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="record file, run id, or (with --protocol) a checkpoint / model name")
    p.add_argument("b", help="the other one")
    p.add_argument("--protocol", help="run this protocol on A and B (checkpoints) before comparing")
    p.add_argument("--preset", help="with --protocol: the preset (default: the protocol's default)")
    p.add_argument("--metric", help="metric to compare (default: the first headline metric with statistics)")
    p.add_argument("--results", default="results", help="where run ids are looked up and --protocol runs are "
                                                        "written (RESULTS/runs/; default results)")
    p.add_argument("--write", action="store_true", help="also write RESULTS/compare/<name>.json and .md")
    p.add_argument("--quick", action="store_true", help="with --protocol: the protocol's --quick run")
    p.add_argument("--data-root", help="with --protocol: as bench run --data-root")
    p.add_argument("--seed", type=SEED, default=0, help="with --protocol: as bench run --seed")
    return p


def _record_of(text: str, results: Path) -> dict:
    from ..records import read_record, record_files, record_run_id
    path = Path(text)
    if path.is_file():
        return read_record(path)
    hits = [rec for p, rec in record_files(results, skip_bad=True) if record_run_id(rec) == text or p.stem == text]
    if len(hits) == 1:
        return hits[0]
    raise BenchError(f"{text}: neither a record file nor {'a unique' if hits else 'a'} run id under "
                     f"{results / 'runs'}; give the record's path (or --protocol P to run two checkpoints)")


def _run_on(name: str, args) -> dict:
    from ..api import evaluate
    return evaluate(name, args.protocol, args.preset, quick=args.quick, data_root=args.data_root,
                    out=args.results, seed=args.seed)


def run(args) -> int:
    from ..comparison import compare_records
    results = Path(args.results)
    if args.protocol:
        a, b = _run_on(args.a, args), _run_on(args.b, args)
    else:
        a, b = _record_of(args.a, results), _record_of(args.b, results)
    c = compare_records(a, b, metric=args.metric)
    ia, ib = c["a"]["interval"], c["b"]["interval"]

    def side(s, iv):
        return f"{s['value']:.2f}" + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")
    print(f"{a['protocol']} · {a['preset']} · {a['dataset']['name']}{' [miniature]' if a['dataset'].get('mini') else ''}"
          f" · {c['metric']}")
    print(f"  A {c['a']['who']} ({c['a']['run_id']}): {side(c['a'], ia)}")
    print(f"  B {c['b']['who']} ({c['b']['run_id']}): {side(c['b'], ib)}")
    print(c["verdict"])
    if args.write:
        from ..comparison_report import write_comparison
        paths = write_comparison(c, a, results)
        print(f"written: {', '.join(str(p) for p in paths)}")
    return 0
