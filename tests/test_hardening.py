"""Issue 33's hostile inputs, one test per item: names that become paths, metadata that becomes code, the site's
--out, cache entries, resume state, numeric flags, Markdown, YAML tags, semisup's logreg preset, the record schema
and unsafe pickles. Each drives the real CLI (or its library call) and checks the one-line refusal or the right
result, and that nothing was written outside the output root."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import write_record


def _record(dataset="imagenet", name="model.pth", run_id="r0", **extra) -> dict:
    rec = {"protocol": "knn", "preset": "dino", "metrics": {"top1": 50.0, "top1_k10": 40.0, "top1_k20": 45.0},
           "checkpoint": {"name": name, "arch": "resnet50", "family": "plain", "sha256": "s"},
           "dataset": {"name": dataset, "mini": True}, "fingerprint": "0" * 16, "run_id": run_id,
           "comparable": False, "not_comparable_because": ["miniature data"]}
    return {**rec, **extra}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def md_cells(line: str) -> list[str]:
    """A GFM table row's cells: split on every pipe not escaped by a backslash (a backslash escapes the next
    character, whatever it is, as cmark-gfm's row scanner reads it)."""
    cells, cur, i = [], "", 0
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            cur += body[i:i + 2]
            i += 2
            continue
        if body[i] == "|":
            cells.append(cur)
            cur = ""
        else:
            cur += body[i]
        i += 1
    if cur.strip():
        cells.append(cur)
    return cells


def assert_rectangular(md: str, where: str = "") -> None:
    """Every Markdown table in `md` has as many cells in each row as in its header."""
    width = None
    for line in md.splitlines():
        if line.startswith("|"):
            n = len(md_cells(line))
            width = n if width is None else width
            assert n == width, f"{where}: row of {n} cells under a header of {width}: {line[:200]!r}"
        else:
            width = None


# 1. record fields become file paths ----------------------------------------------------------------------------

def test_item1_record_names_never_place_a_file_outside_the_results(tmp_path):
    results = tmp_path / "a" / "b" / "results"
    write_record(_record("../../../../x", run_id="r1"), results / "runs" / "r1.json")
    write_record(_record("sub/../../y", run_id="r2"), results / "runs" / "r2.json")
    before = _files(tmp_path) - _files(results)
    assert main(["table", "--results", str(results)]) == 0
    assert _files(tmp_path) - _files(results) == before, "bench table wrote outside its results folder"
    over_k = sorted(p.name for p in results.glob("*over_k.svg"))
    assert over_k == ["knn__..-..-..-..-x__over_k.svg", "knn__sub-..-..-y__over_k.svg"]


def test_item1_writers_refuse_a_path_outside_their_root(tmp_path):
    from bench._io import atomic_write_text
    from bench._text import safe_name
    from bench.errors import BenchError
    root = tmp_path / "out"
    root.mkdir()
    with pytest.raises(BenchError, match="outside the output folder"):
        atomic_write_text(root / ".." / "made" / "x.md", "x", root=root)
    assert not (tmp_path / "made").exists()    # the folder was not created on the way
    for hostile in ("..", ".", "../..", "/etc/passwd", "a/../../b", "\x00", ".hidden", ""):
        name = safe_name(hostile)
        assert name not in (".", "..") and "/" not in name and not name.startswith(".") and name


# 3. bench site --out replaces only a site bench wrote -------------------------------------------------------------

def test_item3_site_out_refuses_what_bench_did_not_write(tmp_path, capsys):
    results = tmp_path / "results"
    write_record(_record(), results / "runs" / "r0.json")
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    notes = tmp_path / "notes.txt"
    notes.write_text("notes")
    for out in (thesis, notes, results, tmp_path):
        capsys.readouterr()
        assert main(["site", "--results", str(results), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "refused" in err and str(out) in err
    assert (thesis / "thesis.tex").read_text() == "years of work" and notes.read_text() == "notes"
    assert (results / "runs" / "r0.json").is_file()
    site = tmp_path / "site"
    assert main(["site", "--results", str(results), "--out", str(site)]) == 0
    assert main(["site", "--results", str(results), "--out", str(site)]) == 0    # its own site: replaced
    (tmp_path / "empty").mkdir()
    assert main(["site", "--results", str(results), "--out", str(tmp_path / "empty")]) == 0


# 7. Markdown: one escaper for every cell and heading ---------------------------------------------------------------

def test_item7_names_with_newlines_and_pipes_keep_tables_rectangular(tmp_path):
    from bench._text import md_escape
    results = tmp_path / "results"
    hostile = "a\nb|c\\|d\r\u2028<script>"
    write_record(_record(hostile, name=hostile, run_id="r1", preset="dino"), results / "runs" / "r1.json")
    assert main(["table", "--results", str(results), "--no-plots"]) == 0
    for md in results.glob("*.md"):
        assert_rectangular(md.read_text(), md.name)
    heading = next(p for p in results.glob("knn__a-b-c-d*.md")).read_text().splitlines()[0]
    assert heading == f"# knn · {md_escape(hostile)}" and "<script>" not in heading
    assert md_cells("| " + md_escape("x|y\\") + " | z |") == [" x\\|y\\\\ ", " z "]


# 10. the record schema, where records are read -------------------------------------------------------------------

def test_item10_invalid_records_are_named_and_left_out(tmp_path, caplog):
    results = tmp_path / "results"
    runs = results / "runs"
    write_record(_record("imagenet", name="ok$\\frac{.pth", run_id="good"), runs / "good.json")  # mathtext: drawn
    bad = {"num.json": _record(7), "list.json": _record(["x"]), "reasons.json": _record(not_comparable_because=5),
           "long.json": _record(name="n" * 200_000), "surrogate.json": _record(name="\ud800")}
    for fname, rec in bad.items():
        write_record(rec, runs / fname)
    (runs / "latin1.json").write_bytes(b'{"protocol": "\xff"}')
    (runs / "deep.json").write_text("[" * 5000 + "]" * 5000)
    with caplog.at_level(logging.WARNING):
        assert main(["table", "--results", str(results)]) == 0
        assert main(["site", "--results", str(results)]) == 0
        from bench.results import load
        frame = load(results)
    for fname in [*bad, "latin1.json", "deep.json"]:
        lines = [r.getMessage() for r in caplog.records if fname in r.getMessage()]
        assert lines and all("\n" not in m for m in lines), fname
    assert set(frame["record"]) == {"good.json"}
    assert r"ok$\\frac{.pth" in (results / "knn__imagenet.md").read_text()   # its backslash escaped
    assert (results / "knn__imagenet__over_k.svg").is_file()


# 2. checkpoint metadata may name an architecture and its shape arguments, nothing else ------------------------------

def _with_meta(path: Path, arch: str, kwargs: dict) -> Path:
    import torch
    from safetensors.torch import save_file
    meta = {"arch": arch, "model_kwargs": kwargs, "family": "torchvision-resnet", "layout": "timm",
            "feature_mode": None, "source": "x", "source_sha256": "y"}
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(path), metadata={"bench.backbone": json.dumps(meta)})
    return path


@pytest.mark.parametrize("arch, kwargs, named", [
    ("resnet18", {"checkpoint_path": "/tmp/evil.pth"}, "checkpoint_path"),
    ("resnet18", {"pretrained_cfg_overlay": {"file": "/tmp/evil.pth"}}, "pretrained_cfg_overlay"),
    ("hf-hub:someone/evil", {}, "hf-hub:someone/evil"),
    ("vit_small_patch16_224", {"img_size": "/tmp/x"}, "img_size")])
def test_item2_metadata_beyond_shape_arguments_is_refused(tmp_path, capsys, arch, kwargs, named):
    from bench.backbones._export import SHAPE_KWARGS, metadata_problem
    path = _with_meta(tmp_path / "m.safetensors", arch, kwargs)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bench metadata refused" in err and named in err
    assert metadata_problem({"arch": "vit_small_patch16_224", "model_kwargs": {k: 1 for k in SHAPE_KWARGS
                                                                               if k != "global_pool"}}) is None


def test_item2_timm_floor_never_unpickles():
    """The floor is the first timm whose loaders default to weights_only=True (1.0.26), and the pin agrees."""
    import tomllib
    root = Path(__file__).resolve().parent.parent
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(d for d in deps if d.startswith("timm"))
    assert floor == "timm>=1.0.26"
    pin = next(line for line in (root / "constraints.txt").read_text().splitlines() if line.startswith("timm=="))
    assert tuple(int(x) for x in pin.split("==")[1].split(".")) >= (1, 0, 26)


# 11. a plain pickle is an unsafe pickle; inspect says which globals were stubbed -------------------------------------

def test_item11_plain_pickle_is_named_unsafe_and_inspect_tells_stubbed_from_allowlisted(tmp_path, capsys):
    import pickle
    import subprocess
    import sys

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Evil()))
    assert main(["inspect", str(plain)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unsafe pickle" in err and "--trust-checkpoint" in err and "builtins.print" in err
    assert "corrupt" not in err
    # a training script's own class (not importable here) beside argparse.Namespace, trusted: one stubbed, one not
    script = ("import argparse, sys, torch, torchvision\nclass TrainArgs: pass\n"
              "m = torchvision.models.resnet18()\n"
              "torch.save({'state_dict': m.state_dict(), 'args': argparse.Namespace(lr=1), 'cfg': TrainArgs()},"
              " sys.argv[1])\n")
    ckpt = tmp_path / "stub.pth"
    subprocess.run([sys.executable, "-c", script, str(ckpt)], check=True)
    assert main(["inspect", "--trust-checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "pickle global __main__.TrainArgs (stubbed" in out
    assert "pickle global argparse.Namespace (allowlisted)" in out


# 8. a !!python tag: one line naming the file and the line --------------------------------------------------------

def test_item8_python_yaml_tags_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import shutil

    from bench.presets import presets_dir
    protos = tmp_path / "protocols"
    shutil.copytree(presets_dir(), protos)
    (protos / "knn.yaml").write_text('presets:\n  dino:\n    k: !!python/object/apply:os.system ["echo pwned"]\n')
    monkeypatch.setenv("BENCH_PROTOCOLS", str(protos))
    assert main(["run", "--protocol", "knn", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bench: error: {protos / 'knn.yaml'}:3: tag !!python/object/apply:os.system refused (YAML here "
                   f"is data; tags that build Python objects could run code)")
    monkeypatch.delenv("BENCH_PROTOCOLS")
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "e.yaml").write_text("args: [run]\nmetrics: !!python/name:os.system\ntolerance: 1\n")
    assert main(["check", "--expected", str(expected)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{expected / 'e.yaml'}:2: tag !!python/name:os.system refused" in err


# 6. every numeric flag is range-checked before work starts ----------------------------------------------------------

def _all_actions():
    import argparse

    from bench.cli import build_parser
    from bench.protocols import get_protocol, list_protocols
    parser, _ = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for verb, p in subs.choices.items():
        yield from ((f"bench {verb}", a) for a in p._actions)
    for name in list_protocols():
        spec = get_protocol(name)
        if spec.add_arguments:
            p = argparse.ArgumentParser()
            spec.add_arguments(p)
            yield from ((f"bench run --protocol {name}", a) for a in p._actions)


def test_item6_numeric_flags_are_range_checked(capsys):
    unchecked = [f"{where} {a.option_strings[0]}" for where, a in _all_actions()
                 if a.type in (int, float) and not a.choices]
    assert not unchecked, f"numeric flags without a range check: {unchecked}"
    for argv, flag in ((["run", "--protocol", "linear", "--micro-batch", "-2"], "--micro-batch"),
                       (["run", "--protocol", "knn", "--batch-size", "0"], "--batch-size"),
                       (["run", "--protocol", "knn", "--workers", "-1"], "--workers"),
                       (["run", "--protocol", "semisup", "--fraction", "Infinity"], "--fraction"),
                       (["extract", "--out", "x", "--crop", "-224"], "--crop")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and f"argument {flag}:" in err and "out of range" in err, err


# 9. docs/semisup.md's `--preset logreg --features DIR` runs ------------------------------------------------------

def test_item9_semisup_logreg_runs_on_features_and_finetuning_presets_say_why_not(tmp_path, capsys):
    import numpy as np
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10     # three far-apart clusters: any fitted linear head separates them
    feats = tmp_path / "feats"
    feats.mkdir()
    for split, n in (("train", 90), ("val", 30)):
        labels = np.arange(n) % 3
        x = (centres[labels] + rng.normal(size=(n, 16))).astype(np.float32)
        np.savez(feats / f"{split}.npz", features=x, labels=labels)
    out = tmp_path / "out"
    assert main(["run", "--protocol", "semisup", "--preset", "logreg", "--fraction", "0.5", "--features", str(feats),
                 "--out", str(out), "--quick"]) == 0
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert rec["metrics"]["top1"] == 100.0 and rec["details"]["subset"]["count"] == 45
    capsys.readouterr()
    assert main(["run", "--protocol", "semisup", "--preset", "logreg", "--labels-percent", "1", "--features",
                 str(feats), "--out", str(out)]) == 2
    assert "add --data-root DIR" in capsys.readouterr().err
    assert main(["run", "--protocol", "semisup", "--preset", "simclr", "--fraction", "0.5", "--features", str(feats),
                 "--out", str(out)]) == 2
    assert "needs --model/--ckpt, not --features" in capsys.readouterr().err


# 4. a cache entry with the right name and other content is set aside and recomputed -----------------------------

def test_item4_foreign_cache_entry_is_set_aside_and_recomputed(mini_root, tmp_path, caplog):
    import numpy as np

    from bench import load_backbone
    from bench.cache import FeatureSet, extract_features, save_feature_split
    from bench.data import TransformSpec, build_eval_transform, open_dataset
    spec = TransformSpec(resize=36, crop=32)
    ds = open_dataset("imagenet", mini_root, "val", build_eval_transform(spec), mini=True)

    def extract(bb):
        return extract_features(bb, ds, split="val", dataset_name="imagenet", feature_mode="pool",
                                transform=spec.to_dict(), data_root=str(mini_root), cache_dir=tmp_path,
                                batch_size=128)
    bb = load_backbone(None, "resnet18")
    good = extract(bb)
    entry = Path(good.meta["cache"])
    # same name, other content: another backbone's features of the same shape (a shared cache, a copied folder)
    other = FeatureSet(np.random.default_rng(0).normal(size=good.features.shape).astype(np.float32), good.labels)
    save_feature_split(entry, "val", other)
    with caplog.at_level(logging.WARNING):
        again = extract(bb)
    assert not again.meta["cache_hit"]
    np.testing.assert_allclose(again.features, good.features, rtol=1e-5, atol=1e-5)
    lines = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    assert len(lines) == 1 and "checksum" in lines[0] and "set aside" in lines[0] and "\n" not in lines[0]
    assert (entry / "val.npz.set-aside").is_file()
    assert extract(bb).meta["cache_hit"]                       # the recomputed entry is trusted again
    meta = json.loads((entry / "val.meta.json").read_text())   # an entry claiming other inputs is not used either
    (entry / "val.meta.json").write_text(json.dumps({**meta, "weights_id": "another"}))
    with caplog.at_level(logging.WARNING):
        assert not extract(bb).meta["cache_hit"]
    assert "computed from other inputs (weights_id)" in caplog.records[-1].getMessage()


# 5. saved training state that does not fit the run: set aside, start over, nothing else touched ------------------

def _seg_run(run_dir: Path):
    import torch

    from bench.backbones import load_backbone
    from bench.protocols._segmentation_optim import layer_decay_groups
    from bench.protocols._segmentation_train import TrainConfig, train_segmentation
    from bench.protocols.segmentation import SegPreset, build_seg_model

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(3, 32, 32, generator=g), torch.randint(0, 3, (32, 32), generator=g)
    torch.manual_seed(0)
    bb = load_backbone(None, "test_resnet")
    model = build_seg_model(bb, SegPreset(aux_weight=0), crop=32, channels=8)
    cfg = TrainConfig(2, 2, 1e-3, 0, 1e-6, 1.0, 0.0, (0.9, 0.999), 0.0, 2, False)
    info = train_segmentation(model, layer_decay_groups(bb.model, model.decode, 0.05, 0.65), Data(), cfg,
                              device=torch.device("cpu"), run_dir=run_dir)
    return model, info


def _hostile_states(reference: dict) -> dict:
    import io
    import pickle

    import torch

    def saved(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
    good = saved(reference)
    # another architecture: every tensor moved (so a partial load would show) and one of another shape
    other = {k: v + 1 if v.is_floating_point() else v for k, v in reference["model"].items()}
    first = next(k for k, v in other.items() if v.ndim == 4)
    other[first] = torch.zeros(1, 1, 1, 1)
    return {"truncated": good[: len(good) // 2], "other-arch": saved({**reference, "model": other}),
            "missing-keys": saved({"iteration": 2}), "non-tensor": pickle.dumps({"model": logging.Logger}),
            "not-a-dict": saved([torch.zeros(2)])}


def test_item5_unusable_resume_state_is_set_aside_and_the_run_starts_over(tmp_path, caplog):
    import torch
    reference, _ = _seg_run(tmp_path / "reference")
    saved = torch.load(tmp_path / "reference" / "last.pt", weights_only=True)
    for name, data in _hostile_states(saved).items():
        run = tmp_path / name
        run.mkdir()
        (run / "last.pt").write_bytes(data)
        (run / "notes.txt").write_text("mine")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            model, info = _seg_run(run)
        assert info["resumed_from"] == 0, name
        warned = [r.getMessage() for r in caplog.records if "cannot resume" in r.getMessage()]
        assert len(warned) == 1 and "\n" not in warned[0], (name, warned)
        assert (run / "last.pt.unusable").read_bytes() == data and (run / "notes.txt").read_text() == "mine"
        for k, v in reference.state_dict().items():     # started over from scratch: the uninterrupted weights
            assert torch.equal(v, model.state_dict()[k]), (name, k)


# 10 (COCO): annotations that cannot become targets are refused up front, in one line --------------------------

def test_item10_bad_coco_annotations_are_one_line_errors(tmp_path):
    from bench.data.coco import COCOInstances
    from bench.errors import DataError
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    image = {"id": 1, "file_name": "1.jpg", "height": 10, "width": 10}
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25,
           "segmentation": [[1, 1, 6, 1, 6, 6]]}
    base = {"images": [image], "annotations": [ann], "categories": [{"id": 1, "name": "cat"}]}
    cases = {"no segmentation": ({**base, "annotations": [{k: v for k, v in ann.items() if k != "segmentation"}]},
                                 "annotation 7 no segmentation"),
             "2-point polygon": ({**base, "annotations": [{**ann, "segmentation": [[1, 1, 6, 6]]}]},
                                 "annotation 7 segmentation polygons need 3 or more"),
             "no images": ({**base, "images": [], "annotations": []}, "no images in val2017"),
             "file name path": ({**base, "images": [{**image, "file_name": "../../x.jpg"}]}, "not a file name"),
             "a list": ([], "not a COCO instances json")}
    path = tmp_path / "annotations" / "instances_val2017.json"
    for name, (data, message) in cases.items():
        path.write_text(json.dumps(data))
        with pytest.raises(DataError) as e:
            COCOInstances(tmp_path, "val2017")
        assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), name
    path.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(DataError, match="not a COCO instances json"):
        COCOInstances(tmp_path, "val2017")
    path.write_text(json.dumps(base))
    assert len(COCOInstances(tmp_path, "val2017")) == 1       # the well-formed file still loads
