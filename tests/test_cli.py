"""The command line as a user meets it: run, extract, --features, records, errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.cli import main
from test_knn import dino_knn_classifier


def _record(out):
    recs = sorted((out / "runs").glob("*.json"))
    assert len(recs) == 1
    return json.loads(recs[0].read_text())


def test_knn_on_the_miniature_writes_a_complete_record(mini_root, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "--protocol", "knn", "--model", "resnet18", "--data-root", str(mini_root), "--out",
                 str(out)]) == 0
    rec = _record(out)
    assert rec["protocol"] == "knn" and rec["preset"] == "dino"
    assert rec["checkpoint"]["name"] == "random" and rec["checkpoint"]["arch"] == "resnet18"
    assert rec["dataset"]["mini"] is True and rec["comparable"] is False
    assert rec["dataset"]["counts"] == {"imagenet/train": 1437, "imagenet/val": 360}
    assert set(rec["metrics"]) >= {"top1", "top5", "top1_k10", "top5_k200"}
    assert rec["metrics"]["top1"] == rec["metrics"]["top1_k20"]
    assert rec["metrics"]["top1"] > 18, "a random ResNet on the coloured digits does better than the 10% chance level"
    settings = rec["fingerprint_settings"]
    assert settings["preset_settings"]["temperature"] == 0.07
    assert settings["inputs"]["imagenet/val"]["transform"]["interpolation"] == "bicubic"
    assert len(rec["fingerprint"]) == 16 and rec["environment"]["torch"] == torch.__version__
    assert "top1" in capsys.readouterr().out


def test_features_dir_equals_dino_formula(tmp_path):
    # well-separated similarities: float32 rounding cannot reorder neighbours, so equality must be exact
    from test_knn import _clustered
    rng = np.random.default_rng(5)
    feats = tmp_path / "feats"
    feats.mkdir()
    (xtr, ytr), (xva, yva) = _clustered(800, 48, 10, rng, noise=2.0), _clustered(300, 48, 10, rng, noise=2.0)
    np.savez(feats / "train.npz", features=xtr, labels=ytr)
    np.savez(feats / "val.npz", features=xva, labels=yva)
    out = tmp_path / "results"
    assert main(["run", "--protocol", "knn", "--features", str(feats), "--out", str(out)]) == 0
    rec = _record(out)
    n = torch.nn.functional.normalize
    for k in (10, 20, 100, 200):
        t1, t5 = dino_knn_classifier(n(torch.tensor(xtr), dim=1), torch.tensor(ytr), n(torch.tensor(xva), dim=1),
                                     torch.tensor(yva), k, 0.07, 10)
        assert rec["metrics"][f"top1_k{k}"] == pytest.approx(t1, abs=1e-9)
        assert rec["metrics"][f"top5_k{k}"] == pytest.approx(t5, abs=1e-9)
    assert rec["fingerprint_settings"]["inputs"]["imagenet/train"]["source"] == "features"
    assert rec["checkpoint"]["name"].startswith("features:")
    assert rec["details"]["backend"] == "torch"    # the default, whether or not faiss is installed


def test_extracted_features_reproduce_the_backbone_run(mini_root, tmp_path):
    feats = tmp_path / "feats"
    common = ["--data-root", str(mini_root), "--resolution", "32"]
    assert main(["extract", *common, "--out", str(feats)]) == 0
    meta = json.loads((feats / "meta.json").read_text())
    assert meta["counts"] == {"train": 1437, "val": 360} and meta["feature_mode"] == "pool"
    assert meta["transform"]["crop"] == 32 and meta["checkpoint_sha256"] is None
    assert main(["run", "--protocol", "knn", "--model", "resnet18", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["run", "--protocol", "knn", "--features", str(feats), "--out", str(tmp_path / "b")]) == 0
    assert _record(tmp_path / "a")["metrics"] == _record(tmp_path / "b")["metrics"]


def test_missing_dataset_is_one_line_naming_the_path(tmp_path, capsys):
    assert main(["run", "--protocol", "knn", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nowhere" / "imagenet") in err and "not found" in err


def test_empty_dataset_folder(tmp_path, capsys):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir()
    assert main(["run", "--protocol", "knn", "--data-root", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["run", "--protocol", "nope"], "unknown protocol 'nope'"),
    (["run", "--protocol", "knn", "--preset", "nope"], "unknown preset 'nope'"),
    (["run", "--protocol", "knn", "--set", "kk=3"], "unknown key(s) ['kk']"),
    (["run", "--protocol", "knn", "--ckpt", "/no/such.pth", "--arch", "resnet18"], "not found"),
    (["run", "--protocol", "knn", "--model", "resnet_nonexistent"], "unknown architecture"),
])
def test_bad_input_is_a_clear_error(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_second_run_reuses_the_record_and_force_reruns(mini_root, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["run", "--protocol", "knn", "--preset", "instdisc", "--data-root", str(mini_root), "--out", str(out),
            "--model", "resnet18"]
    assert main(args) == 0
    first = _record(out)
    assert main(args) == 0
    assert "exists" in capsys.readouterr().out
    assert main(args + ["--force"]) == 0
    again = _record(out)
    assert again["metrics"] == first["metrics"] and list(again["metrics"]) == list(first["metrics"])
    assert set(first["metrics"]) == {"top1", "top5", "top1_k200", "top5_k200"}


def test_python_dash_m_bench_works():
    res = subprocess.run([sys.executable, "-m", "bench", "list", "protocols"], capture_output=True, text=True)
    assert res.returncode == 0 and "knn" in res.stdout


def test_run_help_shows_the_protocols_own_flags_and_presets(capsys):
    from bench.cli import main
    for argv in (["run", "--protocol", "linear", "--help"], ["run", "-h", "--protocol=linear"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "--ckpt" in out and "linear options:" in out and "--micro-batch" in out
        assert "*fast" in out and "mocov2" in out and "Improved Baselines" in out
    assert main(["run", "--help"]) == 0
    assert "--protocol P --help" in capsys.readouterr().out


def test_list_presets_names_the_paper():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "bench", "list", "presets"], capture_output=True, text=True)
    line = next(ln for ln in r.stdout.splitlines() if ln.split()[:2] == ["linear", "mocov2"])
    assert "Improved Baselines with Momentum Contrastive Learning" in line and "main_lincls.py" in line


def test_protocol_package_layout():
    # The one shape of bench/protocols/__init__.py's docstring: <name>.py registers protocol <name>, its machinery
    # is in _<name>_*.py, shared helpers in _common.py, no sub-packages, no protocol code elsewhere in bench.
    import pkgutil
    from pathlib import Path

    import bench
    import bench.protocols as protocols
    from bench.protocols import PROTOCOLS, list_protocols

    names = set(list_protocols())
    modules = list(pkgutil.iter_modules(protocols.__path__))
    assert not [m.name for m in modules if m.ispkg]
    for m in modules:
        if m.name.startswith("_"):
            assert m.name == "_common" or any(m.name.startswith(f"_{n}_") for n in names), m.name
        else:
            assert m.name in names, f"bench/protocols/{m.name}.py registers no protocol of that name"
            assert PROTOCOLS.get(m.name).run.__module__ == f"bench.protocols.{m.name}"
    root = Path(bench.__file__).parent
    outside = [p for p in root.rglob("*.py") if root / "protocols" not in p.parents
               and "@register_protocol(" in p.read_text(encoding="utf-8")]
    assert not outside
    assert not [p for p in (root / "protocols").iterdir() if p.is_dir() and p.name != "__pycache__"]


def test_quiet_also_silences_the_progress_bars(monkeypatch, capsys):
    import os
    monkeypatch.setenv("BENCH_PROGRESS", "1")       # and restored after the test
    assert main(["list", "layouts"]) == 0 and os.environ["BENCH_PROGRESS"] == "1"
    assert main(["list", "layouts", "--quiet"]) == 0 and os.environ["BENCH_PROGRESS"] == "0"


def test_the_default_run_puts_the_packaged_reference_beside_a_random_model_of_its_arch(mini_root, tmp_path, capsys):
    """`bench run --protocol knn` with no backbone: the trained checkpoint shipped in the package and a random model
    of the same arch, each with its record, then one summary line; the trained one ranks far above the random one."""
    out = tmp_path / "results"
    assert main(["run", "--protocol", "knn", "--data-root", str(mini_root), "--out", str(out)]) == 0
    recs = {json.loads(p.read_text())["checkpoint"]["family"]: json.loads(p.read_text())
            for p in (out / "runs").glob("*.json")}
    assert set(recs) == {"moco-v1/v2", "random"}
    trained, random = recs["moco-v1/v2"], recs["random"]
    assert trained["checkpoint"]["registry_name"] == "mini_mocov2_test_resnet"
    assert trained["checkpoint"]["arch"] == random["checkpoint"]["arch"] == "test_resnet"
    assert trained["metrics"]["top1"] > random["metrics"]["top1"] + 10
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary == (f"summary: knn top1 on imagenet [miniature]: mini_mocov2_test_resnet "
                       f"{trained['metrics']['top1']:.1f} · random test_resnet {random['metrics']['top1']:.1f}")


def test_set_on_a_list_field_takes_one_value_or_commas_and_the_error_shows_the_syntax():
    from bench.errors import PresetError
    from bench.presets import parse_overrides, resolve_preset
    from bench.protocols import get_protocol
    cls = get_protocol("knn").preset_cls
    assert resolve_preset("knn", cls, None, parse_overrides(["k=10", "headline_k=10"]))[0].k == (10,)
    with pytest.raises(PresetError, match=r"^--set k=10: headline_k=20 must be one of k=\(10,\)"):
        resolve_preset("knn", cls, None, parse_overrides(["k=10"]))    # dino's headline k is 20
    assert resolve_preset("knn", cls, None, parse_overrides(["k=10,20"]))[0].k == (10, 20)
    assert resolve_preset("knn", cls, None, parse_overrides(["k=[10, 20]"]))[0].k == (10, 20)
    with pytest.raises(PresetError, match=r"--set k=10,20 or --set k=\[10,20\]"):
        resolve_preset("knn", cls, None, parse_overrides(["k={a: 1}"]))


def test_bad_preset_values_are_refused_before_the_backbone_is_built(mini_root, tmp_path, capsys, monkeypatch):
    """A reference checkpoint may take minutes to train: a wrong --set must be refused before that starts."""
    import bench.commands.run as run_cmd
    built = []
    monkeypatch.setattr(run_cmd, "load_backbone_from_args", lambda args: built.append(args) or 1 / 0)
    for bad in (["--set", "k=ten"], ["--set", "nope=1"], ["--preset", "nope"]):
        assert main(["run", "--protocol", "knn", "--ckpt", "mini_mocov2_resnet18", *bad, "--data-root",
                     str(mini_root), "--out", str(tmp_path)]) == 2
    assert not built
    assert main(["run", "--protocol", "knn", "--ckpt", "mini_mocov2_resnet18", "--data-root",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert not built and "nowhere" in capsys.readouterr().err


def test_an_existing_record_says_it_was_not_re_measured(mini_root, tmp_path, capsys):
    argv = ["run", "--protocol", "knn", "--model", "test_resnet", "--resolution", "32", "--data-root",
            str(mini_root), "--out", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "record written:" in first and "NOT re-measured" not in first
    assert main(argv) == 0
    again = capsys.readouterr().out
    rec = _record(tmp_path)
    when = rec["created"].replace("T", " ").replace("+00:00", " UTC")
    assert "record exists:" in again and "were NOT re-measured now" in again and "--force" in again
    assert f"measured {when} on cpu" in again and rec["environment"]["platform"] in again


def test_bench_list_alone_lists_every_registry(capsys):
    from bench.commands.list import WHAT
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for what in WHAT:
        assert f"{what} (bench list {what}):" in out
    assert "knn" in out and "mini_mocov2_test_resnet" in out and "imagenet" in out
