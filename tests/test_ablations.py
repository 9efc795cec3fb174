"""Pre-training ablations: checkpoints.yaml `pretrain:` and `--ckpt-meta` reach the record and its run key, each
ablation table's settings parse as printed, and a measured row gets its Δ only against the row of its setting."""
import csv
import json

import pytest

from bench.errors import BenchError
from bench.records import write_record
from bench.reference import (documented_entries, parse_ablation_setting, pretrain_matches, reference_mapping,
                             reference_table)
from bench.tables import write_tables
from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(table):
    rules = reference_mapping()["ablations"][table]["rules"]
    return [(r["method"], r["split_or_setting"], parse_ablation_setting(r, rules)) for r in reference_table(table)]


def test_every_ablation_row_parses_to_its_printed_setting():
    momentum = {s: p for _, s, p in _settings("moco_momentum_ablation")}
    v1 = {"queue": 4096.0, "mlp": False, "aug_plus": False, "cos": False}    # the table's fixed MoCo v1 recipe
    assert momentum["momentum m=0.99"] == {"momentum": 0.99, **v1}
    assert momentum["momentum m=0.9999"] == {"momentum": 0.9999, **v1}
    v2 = {(m, s): p for m, s, p in _settings("mocov2_ablation")}
    assert v2[("MoCo v2 ablation case (e)", "MLP=yes; aug+=yes; cos=yes")] == {"mlp": True, "aug_plus": True,
                                                                               "cos": True, "epochs": 800.0}
    assert v2[("MoCo v1", "MLP=no; aug+=no; cos=no")] == {"mlp": False, "aug_plus": False, "cos": False,
                                                         "epochs": 200.0}
    assert v2[("supervised", "")] is None                 # the baseline row is no ablation setting
    tau = {s: p for _, s, p in _settings("mocov2_temperature_mlp")}
    fixed = {"aug_plus": False, "cos": False, "epochs": 200.0}
    assert tau["tau=0.2; w/ MLP"] == {"temperature": 0.2, "mlp": True, **fixed}
    assert tau["tau=0.07; w/o MLP"] == {"temperature": 0.07, "mlp": False, **fixed}
    assert {s: p for _, s, p in _settings("simsiam_stopgrad")} == {"w/ stop-grad": {"stop_grad": True},
                                                                  "w/o stop-grad": {"stop_grad": False}}
    mech = {m: p for m, _, p in _settings("moco_contrastive_mechanisms_voc")}
    assert mech == {"end-to-end": {"mechanism": "endtoend"}, "memory bank": {"mechanism": "memorybank"},
                    "MoCo": {"mechanism": "moco"}}
    inst = {s: p for _, s, p in _settings("instdisc_cifar10_svm_knn")}
    assert inst["training objective: NCE m = 4096"] == {"objective": "nce", "nce_m": 4096.0}
    assert inst["training objective: Non-Param Softmax"] == {"objective": "nonparamsoftmax"}
    assert inst["training objective: Param Softmax"] == {"objective": "paramsoftmax"}
    um = {(m, s): p for m, s, p in _settings("um_mae_sampling_ablation")}
    assert um[("(d) UM (Ours)", "pyramid support=✓; SM ratio=25%")] == {"sampling": "uniformmasking",
                                                                        "sm_ratio": 25.0}
    assert um[("(a) RS (MAE [19] Baseline)", "pyramid support=×; SM ratio=—")] == {"sampling": "random",
                                                                                   "sm_ratio": 0.0}
    # every row of every ablation table parses to a setting, except printed baselines
    for table in reference_mapping()["ablations"]:
        unparsed = [m for m, s, p in _settings(table) if p is None]
        assert unparsed in ([], ["supervised"] * 4), (table, unparsed)


def test_pretrain_matching_rule():
    row = (("mlp", True), ("temperature", 0.2))
    assert pretrain_matches(row, {"temperature": "0.2", "mlp": "yes", "epochs": 200})
    assert not pretrain_matches(row, {"temperature": 0.2})               # the row's mlp is not stated
    assert not pretrain_matches(row, {"temperature": 0.2, "mlp": "no"})
    assert not pretrain_matches(row, {"temperature": 0.07, "mlp": True})
    assert pretrain_matches(None, {}) and not pretrain_matches(row, None)


def _record(name, metrics, pretrain=None, protocol="linear", preset="mocov2", dataset="imagenet", fp="1"):
    from bench.presets import preset_version
    rec = {"protocol": protocol, "preset": preset, "preset_version": preset_version(protocol, preset),
           "metrics": metrics, "headline": list(metrics), "comparable": True, "not_comparable_because": [],
           "checkpoint": {"name": name, "arch": "resnet50", "family": "moco-v1/v2", "sha256": f"sha-{name}"},
           "dataset": {"name": dataset, "mini": False}, "preset_settings": {}, "fingerprint": f"{fp:0<16}"}
    if pretrain is not None:
        rec["pretrain"] = pretrain
    return rec


@pytest.fixture(scope="module")
def ablation_tables(tmp_path_factory):
    res = tmp_path_factory.mktemp("ablations")
    catalog = res / "checkpoints.yaml"      # a checkpoint whose setting is in checkpoints.yaml, not the record
    catalog.write_text("checkpoints:\n  moco_m0999:\n    file: m0999.pth\n    family: moco-v1/v2\n"
                       "    arch: resnet50\n    pretrain: {momentum: 0.999, queue: 4096, mlp: no, aug_plus: no, "
                       "cos: no}\n")
    v1 = {"queue": 4096, "mlp": "no", "aug_plus": "no", "cos": "no"}
    records = [_record("m099.pth", {"top1": 57.0}, {"momentum": 0.99, **v1}, fp="1"),
               _record("m05.pth", {"top1": 50.0}, {"momentum": 0.5, **v1}, fp="2"),
               _record("m0999.pth", {"top1": 60.0}, fp="3"),
               _record("v2e.pth", {"top1": 70.0}, {"mlp": "yes", "aug_plus": True, "cos": "yes", "epochs": 800},
                       fp="4"),
               _record("tau.pth", {"top1": 66.0}, {"temperature": 0.2, "mlp": True, "epochs": 200,
                                                   "aug_plus": False, "cos": False}, fp="5"),
               # MoCo v1's released setting (queue 65536) is not the momentum table's K = 4096 rows
               _record("k65536.pth", {"top1": 60.0}, {"momentum": 0.999, "queue": 65536, **{
                   k: v for k, v in v1.items() if k != "queue"}}, fp="6")]
    for i, rec in enumerate(records):
        write_record(rec, res / "runs" / f"r{i}.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CHECKPOINTS_YAML", str(catalog))
        write_tables(res, plots=False)
    with (res / "linear__imagenet.csv").open(newline="") as f:
        return {r["checkpoint"]: r for r in csv.DictReader(f) if r["source"] == "measured"}


def _doc(table, setting):
    return float(next(r["value"] for r in reference_table(table) if r["split_or_setting"] == setting))


def test_matching_ablation_record_gets_its_delta_and_no_other(ablation_tables):
    row = ablation_tables["m099.pth"]
    assert f"top1 {57.0 - _doc('moco_momentum_ablation', 'momentum m=0.99'):+.2f} vs moco_momentum_ablation" \
        in row["delta"]
    assert row["delta"].count("vs moco_momentum_ablation") == 1     # not the 0.9, 0.999 or 0.9999 rows
    assert "mocov2_ablation" not in row["delta"] and "mocov2_temperature_mlp" not in row["delta"]
    assert row["setting"] == "aug_plus=no; cos=no; mlp=no; momentum=0.99; queue=4096"
    # the setting from checkpoints.yaml counts like one in the record
    row = ablation_tables["moco_m0999"]
    assert f"top1 {60.0 - _doc('moco_momentum_ablation', 'momentum m=0.999'):+.2f} vs moco_momentum_ablation" \
        in row["delta"]
    e = next(float(r["value"]) for r in reference_table("mocov2_ablation")
             if r["method"] == "MoCo v2 ablation case (e)" and r["protocol"] == "linear")
    assert ablation_tables["v2e.pth"]["delta"].count("vs mocov2_ablation") == 1
    assert f"top1 {70.0 - e:+.2f} vs mocov2_ablation" in ablation_tables["v2e.pth"]["delta"]
    tau = ablation_tables["tau.pth"]["delta"]
    assert f"top1 {66.0 - _doc('mocov2_temperature_mlp', 'tau=0.2; w/ MLP'):+.2f} vs mocov2_temperature_mlp" in tau


def test_non_matching_ablation_record_gets_no_delta(ablation_tables):
    row = ablation_tables["m05.pth"]
    assert " vs " not in row["delta"]        # no delta against any documented row
    assert row["delta"].startswith("no documented row for moco-v1/v2 resnet50 pre-trained with aug_plus=no; cos=no; "
                                   "mlp=no; momentum=0.5")
    assert "moco_momentum_ablation" not in ablation_tables["k65536.pth"]["delta"]


def test_ablation_rows_are_on_the_leaderboards_with_their_presets():
    tables = {e.table for e in documented_entries()}
    assert set(reference_mapping()["ablations"]) <= tables
    simsiam = [e for e in documented_entries() if e.table == "simsiam_stopgrad"]
    assert {(e.protocol, e.preset, e.pretrain) for e in simsiam} == {
        ("linear", "simsiam", (("stop_grad", True),)), ("linear", "simsiam", (("stop_grad", False),))}


def test_ckpt_meta_reaches_the_record_and_the_run_key(mini_root, tmp_path):
    out = tmp_path / "res"
    base = ("run", "--protocol", "knn", "--model", "resnet18", "--data-root", mini_root, "--resolution", 32,
            "--out", out, "--set", "k=[10]", "--set", "headline_k=10")
    assert run_cli(*base, "--ckpt-meta", "momentum=0.99", "--ckpt-meta", "mlp=yes") == 0
    assert run_cli(*base, "--ckpt-meta", "momentum=0.9") == 0
    assert run_cli(*base) == 0
    recs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert len(recs) == 3      # each setting is its own record
    assert sorted(json.dumps(r["pretrain"], sort_keys=True) for r in recs) == \
        ['{"mlp": true, "momentum": 0.99}', '{"momentum": 0.9}', '{}']
    assert all(("pretrain" in r["run_key"]) == bool(r["pretrain"]) for r in recs)
    # the evaluation itself is the same: the two runs that read the cache share one fingerprint
    by = {json.dumps(r["pretrain"], sort_keys=True): r["fingerprint"] for r in recs}
    assert by['{"momentum": 0.9}'] == by["{}"]
    with pytest.raises(BenchError, match="momentun"):
        from bench.commands.run import parse_ckpt_meta
        parse_ckpt_meta(["momentun=0.9"])
    assert run_cli(*base, "--ckpt-meta", "momentum") == 2
