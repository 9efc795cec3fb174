"""bench table: documented and measured rows side by side, deltas only when fair, byte-identical regeneration."""
import csv
import re
import shutil
from pathlib import Path

import pytest

from bench.records import write_record
from bench.reference import reference_table
from bench.tables import label_fraction, write_tables
from conftest import run_cli


def _version(protocol, preset):
    """The preset's current version (records of older versions are never compared with the paper)."""
    from bench.errors import PresetError
    from bench.presets import preset_version
    try:
        return preset_version(protocol, preset)
    except PresetError:
        return 1


def _record(protocol, preset, metrics, *, arch="resnet50", family="plain", name="model.pth", dataset="imagenet",
            reasons=(), headline=("top1",), preset_settings=None, fp="0"):
    return {"protocol": protocol, "preset": preset, "preset_version": _version(protocol, preset),
            "metrics": metrics, "headline": list(headline),
            "comparable": not reasons, "not_comparable_because": list(reasons),
            "checkpoint": {"name": name, "arch": arch, "family": family, "sha256": f"sha-{name}"},
            "dataset": {"name": dataset, "mini": "miniature data" in reasons},
            "preset_settings": preset_settings or {}, "fingerprint": f"{fp:0<16}", "run_id": f"{fp:0<8}"}


def _write(results: Path, records: list[dict]) -> None:
    for i, rec in enumerate(records):
        write_record(rec, results / "runs" / f"r{i:02d}.json")


def _doc(table, method, arch, protocol, metric="top1"):
    return next(r["value"] for r in reference_table(table)
                if (r["method"], r["arch"], r["protocol"], r["metric"]) == (method, arch, protocol, metric))


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A checkpoints.yaml that names the method of dino_s16.pth (its record family says only 'plain')."""
    path = tmp_path_factory.mktemp("catalog") / "checkpoints.yaml"
    path.write_text("checkpoints:\n  dino_vits16:\n    file: dino_s16.pth\n    method: DINO\n"
                    "    arch: vit_small_patch16_224\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CHECKPOINTS_YAML", str(path))
        yield path


@pytest.fixture(scope="module")
def results(tmp_path_factory, catalog):
    """One results folder of synthetic records for every protocol shape, tables written once (plots are slow)."""
    res = tmp_path_factory.mktemp("tables") / "results"
    vit = dict(arch="vit_small_patch16_224", name="dino_s16.pth")
    _write(res, [
        _record("knn", "dino", {"top1": 75.0, "top5": 90.0, "top1_k10": 74.0, "top1_k20": 75.0}, **vit, fp="1",
                headline=("top1", "top5")),
        _record("knn", "dino", {"top1": 10.0, "top5": 20.0, "top1_k20": 10.0}, **vit, fp="2",
                reasons=("miniature data", "--quick")),
        _record("knn", "instdisc", {"top1": 70.0, "top1_k200": 70.0}, **vit, fp="3"),
        _record("knn", "dino", {"top1": 5.0}, arch="resnet18", family="random", name="random", fp="4"),
        _record("semisup", "byol", {"top1": 55.0, "top5": 80.0}, family="byol", name="byol.pth", fp="5",
                preset_settings={"label_fraction": 0.01}),
        _record("semisup", "byol", {"top1": 70.0}, family="byol", name="byol.pth", fp="6",
                preset_settings={"label_fraction": 0.1}),
        _record("semisup", "byol", {"top1": 1.0}, family="byol", name="nofrac.pth", fp="7"),
        _record("transfer", "linear", {"food101": 70.0, "aircraft": 50.0, "mean": 60.0}, arch="resnet50",
                family="simclr", name="simclr.pth", fp="8"),
    ])
    write_tables(res)
    return res


def _measured(rows, checkpoint):
    return [r for r in rows if r["source"] == "measured" and r["checkpoint"] == checkpoint]


def test_knn_table_has_documented_rows_and_deltas_only_when_fair(results):
    rows = _rows(results / "knn__imagenet.csv")
    documented = [r for r in rows if r["source"] == "dino_linear_knn"]
    assert len(documented) == sum(1 for r in reference_table("dino_linear_knn") if r["protocol"] == "knn")
    dino = _measured(rows, "dino_vits16")
    assert {r["method"] for r in dino} == {"DINO"}          # from checkpoints.yaml, not the record's family
    fair = next(r for r in dino if r["record"] == "10000000")
    expected = 75.0 - float(_doc("dino_linear_knn", "DINO", "ViT-S", "knn"))
    assert f"top1 {expected:+.2f} vs dino_linear_knn" in fair["delta"]
    assert fair["top1"] == "75.00" and fair["top5"] == "90.00"
    mini = next(r for r in dino if r["top1"] == "10.00")
    assert mini["delta"] == "not compared: miniature data; --quick"
    other = next(r for r in dino if r["preset"] == "instdisc")
    assert "preset instdisc, documented dino" in other["delta"] and "+" not in other["delta"]
    random_row = _measured(rows, "random")[0]
    assert random_row["delta"].startswith("no documented row for random resnet18")


def test_semisup_fraction_becomes_the_column_and_meets_byol(results):
    rows = _rows(results / "semisup__imagenet.csv")
    byol = _measured(rows, "byol.pth")
    assert len(byol) == 1                                     # 1 % and 10 % records share one row
    row = byol[0]
    assert row["top1@1%"] == "55.00" and row["top1@10%"] == "70.00" and row["top5@1%"] == "80.00"
    d1 = 55.0 - float(_doc("byol_semisup", "BYOL (ours)", "ResNet-50", "semisup_1pct"))
    d10 = 70.0 - float(_doc("byol_semisup", "BYOL (ours)", "ResNet-50", "semisup_10pct"))
    assert f"top1@1% {d1:+.2f}" in row["delta"] and f"top1@10% {d10:+.2f}" in row["delta"]
    assert _measured(rows, "nofrac.pth")[0]["delta"] == "not compared: label fraction not in the record"
    assert label_fraction({"preset_settings": {"percent": 10}}) == "10%"
    # semisup's own detail is a percentage: 1 means 1 %, not a fraction of 1
    assert label_fraction({"details": {"label_percent": 1}, "run_key": {"options": {"labels_percent": 1}}}) == "1%"
    assert label_fraction({"details": {}}) is None


def test_transfer_spreads_over_per_dataset_tables(results):
    food = _rows(results / "transfer__food101.csv")
    row = _measured(food, "simclr.pth")[0]
    assert row["top1"] == "70.00"
    aircraft = _measured(_rows(results / "transfer__aircraft.csv"), "simclr.pth")[0]
    assert aircraft["mean_per_class_acc"] == "50.00"          # the documented metric of that dataset
    assert not (results / "transfer__mean.csv").exists()
    assert "no documented row" in row["delta"]                # SimCLR's transfer table prints no arch


def test_plots_written(results):
    for stem in ("knn__imagenet", "knn__imagenet__over_k", "semisup__label_efficiency", "transfer__per_dataset"):
        assert (results / f"{stem}.png").stat().st_size > 1000
        assert (results / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    index = (results / "index.md").read_text()
    assert "[knn__imagenet.md](knn__imagenet.md)" in index


def test_markdown_is_a_table_with_one_cell_per_column(results):
    md = (results / "knn__imagenet.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    widths = {line.count(" | ") for line in table if not line.startswith("|---")}
    assert len(widths) == 1 and table[1].count("---") == len(table[0].split(" | "))


def test_regeneration_is_byte_identical_and_path_independent(results, tmp_path):
    def snapshot(folder):
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    first = snapshot(results)
    write_tables(results)
    assert snapshot(results) == first
    elsewhere = tmp_path / "copy"
    shutil.copytree(results / "runs", elsewhere / "runs")
    assert run_cli("table", "--results", elsewhere) == 0
    copy = snapshot(elsewhere)
    assert copy == first and any(name.endswith(".svg") for name in copy)


def test_table_on_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("table", "--results", tmp_path / "nope") == 2
    assert "results folder not found" in capsys.readouterr().err


def test_repository_catalog_is_what_the_leaderboard_reads(monkeypatch):
    """checkpoints.yaml is a list of named entries; the leaderboard finds a record's method through it."""
    from bench.backbones.zoo import load_registry
    from bench.sweep import catalog_entry_for, checkpoint_catalog
    monkeypatch.delenv("BENCH_CHECKPOINTS_YAML", raising=False)
    catalog = checkpoint_catalog()
    assert set(catalog) == set(load_registry()) and len(catalog) > 20
    name, entry = catalog_entry_for({"name": "mae_pretrain_vit_base.pth"})
    assert name == "mae_vit_base" and entry.family == "mae"
    # a record of `--ckpt mae_vit_base` names the cached file; its registry name is in the record too
    assert catalog_entry_for({"name": "mae_vit_base-mae_pretrain_vit_base.pth"})[0] == "mae_vit_base"
    assert catalog_entry_for({"name": "renamed.pth", "registry_name": "mae_vit_base"})[0] == "mae_vit_base"


def test_transfer_table_has_simclr_layout(results):
    rows = _rows(results / "transfer__12datasets.csv")
    simclr_doc = next(r for r in rows if r["source"] == "simclr_transfer_12datasets" and r["method"] == "SimCLR (ours)")
    assert simclr_doc["food101"] == _doc("simclr_transfer_12datasets", "SimCLR (ours)", "", "transfer_linear")
    assert list(rows[0])[6:9] == ["food101", "cifar10", "cifar100"]          # Kornblith's column order
    measured = next(r for r in rows if r["source"] == "measured")
    assert (measured["food101"], measured["aircraft"], measured["cifar10"]) == ("70.00", "50.00", "")
    assert measured["mean (datasets present)"] == "60.00"


def test_detection_records_meet_the_documented_voc07_rows():
    """Detection records name bench's dataset `voc`; the papers' rows say voc2007: one table, not two."""
    from bench.tables import build_tables
    rec = _record("detection", "moco", {"AP50": 80.0, "AP": 50.0, "AP75": 55.0}, dataset="voc",
                  headline=("AP50", "AP", "AP75"))
    (table,) = [t for t in build_tables([rec]) if t.protocol == "detection"]
    assert table.dataset == "voc2007" and table.documented and len(table.measured) == 1


def test_check_passes_on_regenerated_tables_and_fails_after_editing_a_record(results, tmp_path, capsys):
    import json
    copy = tmp_path / "committed"
    shutil.copytree(results, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    assert run_cli("table", "--results", copy, "--check") == 0
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before     # --check writes nothing
    capsys.readouterr()

    # a record edited by hand: its tables (and plots) no longer agree
    path = next(p for p in sorted((copy / "runs").glob("*.json")) if json.loads(p.read_text())["protocol"] == "knn")
    rec = json.loads(path.read_text())
    rec["metrics"]["top1"] += 1.0
    path.write_text(json.dumps(rec))
    (copy / "linear__imagenet.md").unlink()
    (copy / "knn__stl10.csv").write_text("protocol,dataset\n")            # left over from a deleted record
    assert run_cli("table", "--results", copy, "--check", "--no-plots") == 1
    out = capsys.readouterr().out
    assert f"{copy / 'knn__imagenet.md'}: differs" in out and f"{copy / 'knn__imagenet.csv'}: differs" in out
    assert f"{copy / 'linear__imagenet.md'}: missing" in out and f"{copy / 'knn__stl10.csv'}: no record" in out
    assert "semisup__imagenet.md" not in out and ".png" not in out           # untouched tables; plots not checked
    assert (copy / "knn__imagenet.md").read_bytes() == before["knn__imagenet.md"]


def test_registry_moco_checkpoints_get_their_delta(monkeypatch):
    """`--ckpt mocov2_800ep` (family moco-v1/v2) meets MoCo v2's printed rows; a detection record of a MoCo R50
    meets the R50-C4 rows of MoCo's VOC table: a comparable record GETS its Δ, not only a row."""
    from bench.tables import build_tables, delta_parts
    monkeypatch.delenv("BENCH_CHECKPOINTS_YAML", raising=False)   # the repository's registry, not the fixture's
    ck = {"name": "mocov2_800ep-moco_v2_800ep_pretrain.pth.tar", "registry_name": "mocov2_800ep",
          "family": "moco-v1/v2", "arch": "resnet50", "sha256": "x"}
    lin = {**_record("linear", "mocov2", {"top1": 71.0, "top5": 90.0}), "checkpoint": ck}
    det = {**_record("detection", "moco", {"AP50": 80.0, "AP": 55.0, "AP75": 60.0}, dataset="voc",
                     headline=("AP50", "AP", "AP75")), "checkpoint": ck}
    for rec, protocol in ((lin, "linear"), (det, "detection")):
        (table,) = [t for t in build_tables([rec]) if t.protocol == protocol and t.measured]
        parts = delta_parts(table.measured[0], table)
        assert any(p.values for p in parts), [p.text for p in parts]


def _doc_entry(metric, value, method, arch, row):
    from bench.reference import Documented
    return Documented("paper_table", "A paper", "segmentation", "upernet", "ade20k", metric, method, arch, "", value,
                      row)


def _measured_row(values, arch, name):
    from bench.tables import Measured
    rec = {"headline": ["mIoU", "mAcc", "aAcc"], "dataset": {"name": "ade20k"}, "run_id": name}
    return Measured("segmentation", "ade20k", "mae", arch, name, "upernet", (), dict(values), [name], [rec])


def test_rows_sort_by_the_headline_within_arch_groups_and_the_headline_column_comes_first():
    from bench.tables import Table, table_rows
    # the paper prints aAcc before mIoU; rows in reference order are ViT-B (2), R50, ViT-B (1)
    docs = []
    for row, (method, arch, miou, aacc) in enumerate([("X", "ViT-B/16", "45.0", "80.0"), ("Y", "ResNet-50", "40.0",
                                                      "79.0"), ("Z", "ViT-B", "48.1", "83.0"), ("W", "ResNet-50",
                                                      "42.5", "81.0"), ("V", "", "30.0", "70.0")]):
        docs += [_doc_entry("aAcc", aacc, method, arch, row), _doc_entry("mIoU", miou, method, arch, row)]
    measured = [_measured_row({"mIoU": 46.0, "aAcc": 82.0, "mAcc": 55.0}, "vit_base_patch16_224", "m-vit"),
                _measured_row({"mIoU": 41.0, "aAcc": 80.0, "mAcc": 50.0}, "resnet50", "m-r50"),
                _measured_row({"mIoU": 20.0, "aAcc": 60.0, "mAcc": 30.0}, "resnet18", "m-r18")]
    header, rows = table_rows(Table("segmentation", "ade20k", docs, measured))
    assert header[6:9] == ["mIoU", "mAcc", "aAcc"], "headline first, then the protocol's fixed order"
    order = [(r[1], r[6]) for r in rows]
    # groups by their best mIoU (ViT-B 48.1 > ResNet-50 42.5 > arch not printed 30.0 > resnet18 20.0); within a
    # group descending, the measured rows between the papers' rows they sit closest to
    assert order == [("Z", "48.1"), ("mae", "46.00"), ("X", "45.0"),
                     ("W", "42.5"), ("mae", "41.00"), ("Y", "40.0"),
                     ("V", "30.0"), ("mae", "20.00")]
    vals = [float(v) for _, v in order]
    assert vals[:3] == sorted(vals[:3], reverse=True) and vals[3:6] == sorted(vals[3:6], reverse=True)


def test_error_rate_tables_sort_ascending():
    from bench.reference import Documented
    from bench.tables import Table, table_rows
    docs = [Documented("t", "p", "robustness", "hendrycks", "imagenet_c", "mCE", m, "ResNet-50", "", v, i)
            for i, (m, v) in enumerate([("A", "76.7"), ("B", "45.0"), ("C", "60.2")])]
    _, rows = table_rows(Table("robustness", "imagenet_c", docs, []))
    assert [r[6] for r in rows] == ["45.0", "60.2", "76.7"], "mCE: lower is better, best first"


def test_committed_tables_put_the_headline_first():
    from bench.tables import METRIC_ORDER
    root = Path(__file__).resolve().parent.parent / "results"
    for protocol, stem, first in (("segmentation", "segmentation__ade20k", "mIoU"),
                                  ("retrieval", "retrieval__roxford5k", "mAP_M"),
                                  ("detection", "detection__voc2007", "AP50")):
        header = _rows(root / f"{stem}.csv")[0]
        metrics = list(header)[8:]
        assert metrics[0] == first == METRIC_ORDER[protocol][0], stem


# each protocol's default preset and the dataset its table is on (retrieval: the revisited Oxford the pin runs)
DEFAULT_TABLES = {"knn": "imagenet", "linear": "imagenet", "logreg": "imagenet", "layers": "imagenet",
                  "finetune": "imagenet", "semisup": "imagenet", "svm": "cifar10", "transfer": "food101",
                  "segmentation": "ade20k", "detection": "voc2007", "coco_detection": "coco",
                  "retrieval": "roxford5k", "robustness": "imagenet_a", "voc_transfer": "voc2007",
                  "depth": "nyu", "video_segmentation": "davis2017", "correspondence": "spair71k"}
# where neither the slides nor a paper's repository gives a number we could read and cite (docs/leaderboards.md)
# (DINO's DAVIS J&F is printed in its paper only, not in a repository we could read; SPair PCK likewise)
NO_DOCUMENTED_ROW = {"logreg", "retrieval", "video_segmentation", "correspondence"}


def test_every_default_preset_table_has_a_documented_row_and_paper_rows_cite_their_source():
    import yaml
    from bench.reference import PAPER_PREFIX, documented_entries, paper_rows
    from bench.tables import build_tables, render_markdown
    protocols = {p.stem for p in (Path(__file__).resolve().parent.parent / "protocols").glob("*.yaml")}
    assert set(DEFAULT_TABLES) == protocols, "a new protocol needs its default table here"
    tables = {(t.protocol, t.dataset): t for t in build_tables([])}
    for protocol, dataset in DEFAULT_TABLES.items():
        t = tables.get((protocol, dataset))
        has_rows = bool(t and t.documented)
        assert has_rows != (protocol in NO_DOCUMENTED_ROW), (protocol, dataset)
    # the DINOv2 linear rows are the default `fast` preset's (DINOv2's linear.py)
    default = yaml.safe_load((Path(__file__).resolve().parent.parent / "protocols" / "linear.yaml").read_text())
    dinov2 = [d for d in tables["linear", "imagenet"].documented if d.table == "paper:dinov2_readme"]
    assert {d.arch for d in dinov2} == {"ViT-S/14", "ViT-B/14", "ViT-L/14", "ViT-g/14"}
    assert {d.preset for d in dinov2} == {default["default"]}
    assert any(d.table == "paper:beit_ade20k_readme" for d in tables["segmentation", "ade20k"].documented)
    rows = paper_rows()
    assert rows and all(d in documented_entries() for d in rows)
    for d in rows:
        assert d.table.startswith(PAPER_PREFIX) and d.outside_slides and d.paper
        assert re.fullmatch(r"[\w-]+/[\w.-]+@[0-9a-f]{7,40} \S+ L\d+(-\d+)?\b.*", d.citation), d.citation
    for key in {(d.protocol, d.dataset) for d in rows}:
        md = render_markdown(tables[key])
        for d in rows:
            if (d.protocol, d.dataset) == key:
                start = f"| {d.table} | {d.method} | {d.arch} |"
                row = next(line for line in md.splitlines() if line.startswith(start))
                assert d.value in row
                assert f"- `{d.table}`: {d.citation}" in md, "each paper row's citation is under its table"


def test_delta_says_whether_the_paper_lies_inside_the_interval_and_the_spread(tmp_path, catalog):
    """A comparable DINO ViT-S/16 k-NN row: its Δ says where the paper's number lies relative to the record's 95%
    interval and to the spread of a sensitivity sweep of the same checkpoint."""
    from bench.tables import _doc_rows, attach_spreads, build_tables, delta_cell
    rec = _record("knn", "dino", {"top1": 74.0, "top5": 90.0}, arch="vit_small_patch16_224", name="dino_s16.pth",
                  fp="9", headline=("top1", "top5"))
    t = next(t for t in build_tables([rec]) if (t.protocol, t.dataset) == ("knn", "imagenet"))
    m = t.measured[0]
    docs = [cells["top1"] for _, cells, d in _doc_rows(t)
            if "top1" in cells and d.preset == "dino" and "DINO" in d.method and "S/16" in d.arch]
    assert docs, "the DINO ViT-S/16 k-NN row of the reference tables"
    paper = float(docs[0])
    rec["intervals"] = {"top1": {"lo": paper - 0.5, "hi": paper + 0.5}}
    t = next(t for t in build_tables([rec]) if (t.protocol, t.dataset) == ("knn", "imagenet"))
    assert "inside the 95% interval" in delta_cell(t.measured[0], t)
    rec["intervals"] = {"top1": {"lo": paper + 0.1, "hi": paper + 0.9}}
    t = next(t for t in build_tables([rec]) if (t.protocol, t.dataset) == ("knn", "imagenet"))
    sweep = {"kind": "sensitivity", "protocol": "knn", "preset": "dino", "dataset": "imagenet", "metric": "top1",
             "checkpoint": {"sha256": "sha-dino_s16.pth"}, "spread": {"all": {"min": paper - 2, "max": paper + 3}}}
    attach_spreads([t], [sweep])
    cell = delta_cell(t.measured[0], t)
    assert "outside the 95% interval" in cell and f"inside the protocol spread {paper - 2:.2f}–{paper + 3:.2f}" in cell
    assert m.key == t.measured[0].key
