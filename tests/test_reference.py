"""The reference data: the package copy equals the shared source, and every rendered number is the CSV's."""
import csv
import os
from pathlib import Path

import pytest

from bench.reference import (DATA_DIR, canonical_arch, canonical_method, documented_entries, reference_index,
                             reference_mapping, reference_table, render_reference_table)

REPO = Path(__file__).resolve().parent.parent


def _shared_reference() -> Path | None:
    """../shared/reference from the repository (or a worktree one or two levels deeper), or $BENCH_SHARED_REFERENCE."""
    candidates = [Path(os.environ["BENCH_SHARED_REFERENCE"])] if os.environ.get("BENCH_SHARED_REFERENCE") else []
    candidates += [p / "shared" / "reference" for p in (REPO.parent, REPO.parent.parent)]
    return next((p for p in candidates if (p / "index.csv").is_file()), None)


def _source_dir() -> Path:
    return _shared_reference() or DATA_DIR


def test_package_copy_equals_shared_reference():
    shared = _shared_reference()
    if shared is None:
        pytest.skip("../shared/reference not present; the package copy is checked against itself below")
    shared_csvs = sorted(p.name for p in shared.glob("*.csv"))
    assert shared_csvs == sorted(p.name for p in DATA_DIR.glob("*.csv"))
    for name in shared_csvs:
        assert (DATA_DIR / name).read_bytes() == (shared / name).read_bytes(), name


def test_index_lists_every_table():
    listed = sorted(r["file"] for r in reference_index())
    assert listed == sorted(p.name for p in DATA_DIR.glob("*.csv") if p.name != "index.csv")
    for r in reference_index():   # the index's counts are the CSVs' own
        rows = reference_table(r["file"].removesuffix(".csv"))
        assert len(rows) == int(r["n_rows"]), r["file"]
        assert sum(1 for x in rows if x["value"]) == int(r["n_numeric_values"]), r["file"]


def _parse_markdown(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    split = [[c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")] for line in lines]
    return split[0], split[2:]


@pytest.mark.parametrize("name", [r["file"].removesuffix(".csv") for r in reference_index()])
def test_rendered_reference_table_matches_source_csv(name):
    """Every value cell of the rendered table is found back in the source CSV row with the same key columns and
    protocol/dataset/metric, and every numeric CSV row appears exactly once."""
    with (_source_dir() / f"{name}.csv").open(newline="", encoding="utf-8") as f:
        source = list(csv.DictReader(f))
    header, rows = _parse_markdown(render_reference_table(name))
    key_cols = [h for h in header if "/" not in h and h in source[0]]
    expected = {}
    for row in source:
        if row["value"]:
            col = "/".join(c for c in (row["protocol"], row["dataset"], row["metric"]) if c)
            expected[(tuple(row[k] for k in key_cols), col)] = row["value"]
    seen = {}
    for cells in rows:
        key = tuple(cells[:len(key_cols)])
        for col, cell in zip(header[len(key_cols):], cells[len(key_cols):]):
            if cell and not cell.startswith("("):
                seen[(key, col)] = cell
    assert seen == expected


def test_documented_entries_place_numbers_on_bench_grid():
    entries = documented_entries()
    dino = [e for e in entries if e.table == "dino_linear_knn" and e.method == "DINO" and e.arch == "ViT-S"]
    source = {r["protocol"]: r["value"] for r in reference_table("dino_linear_knn")
              if r["method"] == "DINO" and r["arch"] == "ViT-S"}
    assert {(e.protocol, e.preset, e.metric, e.value) for e in dino} == {
        ("knn", "dino", "top1", source["knn"]), ("linear", "dino", "top1", source["linear"])}
    semisup = {e.metric for e in entries if e.table == "byol_semisup"}
    assert semisup == {"top1@1%", "top1@10%", "top5@1%", "top5@10%"}
    # excluded ablations and unmapped protocols never reach the leaderboards
    assert not {e.table for e in entries} & set(reference_mapping()["excluded"])
    from bench.protocols import list_protocols
    assert {e.protocol for e in entries} <= set(list_protocols())   # every documented number has a bench protocol


def test_every_reference_protocol_is_mapped_or_explained():
    mapping = reference_mapping()
    used = {r["protocol"] for x in reference_index() for r in reference_table(x["file"].removesuffix(".csv"))}
    assert used <= set(mapping["protocols"]) | set(mapping["unmapped"])
    tables = {r["file"].removesuffix(".csv") for r in reference_index()}
    assert set(mapping["tables"]) | set(mapping["excluded"]) <= tables


@pytest.mark.parametrize("printed,timm_name", [("RN50", "resnet50"), ("ResNet-50", "resnet50"),
                                               ("ViT-S/16", "vit_small_patch16_224"),
                                               ("ResNet-50 (2×)", "resnet50w2"), ("VGG-16", "vgg16")])
def test_canonical_arch_equates_printed_and_timm_names(printed, timm_name):
    assert canonical_arch(printed) == canonical_arch(timm_name)


def test_canonical_arch_keeps_different_archs_apart():
    assert canonical_arch("RN50") != canonical_arch("RN50w2")
    assert canonical_arch("ViT-S/16") != canonical_arch("ViT-S/8")


def test_canonical_method_aliases():
    assert canonical_method("MoCov2 [15]") == canonical_method("MoCo v2") == "mocov2"
    assert canonical_method("SCLR [12]") == canonical_method("SimCLR (ours)") == "simclr"
    assert canonical_method("Ours") is None


def test_every_mapped_preset_exists_in_the_protocol_yaml():
    from bench.presets import load_protocol_yaml
    from bench.reference import preset_for, table_entry
    mapping = reference_mapping()
    for table, per_protocol in mapping["tables"].items():
        for ref_protocol, value in per_protocol.items():
            target, value, _ = table_entry(mapping["protocols"][ref_protocol], value)   # a table's own protocol
            protocol = target["protocol"]
            names = [value] if isinstance(value, str) else list(value.values())
            known = set(load_protocol_yaml(protocol)["presets"])
            assert set(names) <= known, f"{table}: {protocol} presets {set(names) - known} do not exist"
    # the architecture picks the paper's own variant
    dino = mapping["tables"]["dino_linear_knn"]["linear"]
    assert (preset_for(dino, "ViT-B/16"), preset_for(dino, "ViT-S/16"), preset_for(dino, "RN50")) == \
        ("dino_vitb", "dino", "dino")


# Issue 22's other parts map these tables (their branches merge after 22a's)
OTHER_HELPERS = {"noisy_student_robustness": "22b", "um_mae_pyramid_vits": "22c", "deepcluster_voc_transfer": "22d",
                 "jigsawpp_voc_transfer": "22d", "deepcluster_voc07_detection": "22d"}


def test_every_reference_table_is_mapped_and_renders(tmp_path):
    """`bench table` on an empty results folder writes every reference table's documented rows, and index.md
    lists each table with its leaderboard files, protocols and presets."""
    from bench.tables import write_tables
    write_tables(tmp_path, plots=False)
    index = (tmp_path / "index.md").read_text()
    mapping = reference_mapping()
    problems = {}
    for entry in reference_index():
        name = entry["file"].removesuffix(".csv")
        docs = [e for e in documented_entries() if e.table == name]
        line = next((x for x in index.splitlines() if x.startswith(f"| `{name}` |")), "")
        if name not in mapping["tables"] or not docs:
            problems[name] = "not mapped in bench/reference/mapping.yaml `tables`"
            continue
        if not line or "| none |" in line:
            problems[name] = "not listed with a leaderboard in index.md"
            continue
        for e in docs:   # every documented value is in its own row of the table file the index names
            stem = f"{e.protocol}__{e.dataset}"
            with (tmp_path / f"{stem}.csv").open(newline="", encoding="utf-8") as f:
                cells = [r.get(e.metric) for r in csv.DictReader(f) if (r["source"], r["method"], r["arch"],
                         r["setting"], r["preset"]) == (e.table, e.method, e.arch, e.setting, e.preset)]
            if f"[{stem}.md]" not in line or cells != [e.value]:
                problems[name] = f"{e.metric}={e.value} ({e.method} {e.setting}) not in its row of {stem}.csv"
                break
    owners = {n: OTHER_HELPERS.get(n, "22a") for n in problems}
    assert not problems, "reference tables without a leaderboard: " + "; ".join(
        f"{n} [{owners[n]}]: {why}" for n, why in problems.items())
