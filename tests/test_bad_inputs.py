"""Bad inputs and faults as a user meets them (issue 18): each gives exit code 2 and ONE line naming the file or
flag and the fix, writes no record, and runs no code from a file (no marker appears)."""
from __future__ import annotations

import io
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from bench.errors import BenchError, CheckpointError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this runs `touch MARKER`: the attack a tampered data or checkpoint file carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_line_error(capsys, pattern: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error:") and re.search(pattern, err), err
    return err


def _no_record(out: Path) -> None:
    assert not list(Path(out).rglob("runs/*.json"))


# ---- --features: numbers that mean nothing are refused before any protocol runs ---------------------------------

def _features(tmp_path: Path, mutate) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "feats"
    d.mkdir(exist_ok=True)
    for split, n in (("train", 60), ("val", 30)):
        x, y = rng.normal(size=(n, 8)).astype(np.float32), np.arange(n) % 3
        x, y = mutate(split, x, y)
        np.savez(d / f"{split}.npz", features=x, labels=y)
    return d


def _nan_all(split, x, y):
    return np.full_like(x, np.nan), y


def _nan_some(split, x, y):
    x[3, 2] = np.nan
    return x, y


def _inf_val(split, x, y):
    if split == "val":
        x[0, 0] = np.inf
    return x, y


def _float_labels(split, x, y):
    return x, y.astype(np.float64) + 0.5


def _integral_float_labels(split, x, y):   # 0.0, 1.0, 2.0 are still not integer-typed labels
    return x, y.astype(np.float32)


def _negative(split, x, y):
    y = y.copy()
    y[0] = -1
    return x, y


def _huge(split, x, y):
    y = y.copy()
    y[0] = 10 ** 9
    return x, y


def _strings(split, x, y):
    return x, np.array([f"class{v}" for v in y])


FEATURE_CASES = [(_nan_all, "NaN or Inf"), (_nan_some, r"1 of 60 feature rows hold NaN or Inf"),
                 (_inf_val, "NaN or Inf"), (_float_labels, "must be integers"),
                 (_integral_float_labels, "must be integers"), (_negative, r"class indices in \[0, "),
                 (_huge, r"to 1000000000"), (_strings, "must be integers")]


@pytest.mark.parametrize("protocol", ["knn", "logreg", "linear"])
@pytest.mark.parametrize("mutate,pattern", FEATURE_CASES, ids=[f.__name__.strip("_") for f, _ in FEATURE_CASES])
def test_bad_feature_files_are_refused(protocol, mutate, pattern, tmp_path, capsys):
    if protocol == "linear" and mutate not in (_nan_all, _nan_some, _inf_val, _float_labels):
        pytest.skip("label checks are shared; linear covers the features")
    feats = _features(tmp_path, mutate)
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", protocol, "--features", feats, "--out", out, "--quick") == 2
    err = _one_line_error(capsys, pattern)
    assert str(feats) in err
    _no_record(out)


def test_multilabel_features_accept_voc_values_only(tmp_path):
    from bench.cache import check_feature_arrays
    x = np.zeros((3, 4), np.float32)
    check_feature_arrays(tmp_path / "f.npz", x, np.array([[1, -1], [0, 1], [-1, -1]], np.int8))
    with pytest.raises(DataError, match="multi-label"):
        check_feature_arrays(tmp_path / "f.npz", x, np.array([[2, -1], [0, 1], [-1, -1]], np.int8))


# ---- flags and preset values ------------------------------------------------------------------------------------

FLAG_CASES = [
    (["--protocol", "semisup", "--set", "batch_size=0"], r"--set batch_size=0: batch_size must be > 0"),
    (["--protocol", "semisup", "--set", "base_lr=-1"], r"base_lr must be > 0"),
    (["--protocol", "linear", "--set", "epochs=-1"], r"epochs.* must be (> 0|≥ 1)"),
    (["--protocol", "segmentation", "--set", "lr=-1"], r"lr must be > 0"),
    (["--protocol", "knn", "--set", "temperature=.nan"], r"temperature must be a finite number"),
    (["--protocol", "linear", "--set", "momentum=1.5"], r"momentum must be in \[0, 1\]"),
    (["--protocol", "knn", "--device", "garbage"], r"--device garbage: not a device name"),
    # --batch-size 0 is refused by argparse when parsed (bench._argtypes; tests/test_hardening.py item 6)
]


@pytest.mark.parametrize("argv,pattern", FLAG_CASES, ids=[" ".join(a[1:]) for a, _ in FLAG_CASES])
def test_bad_flags_and_preset_values(argv, pattern, mini_root, tmp_path, capsys):
    out = tmp_path / "results"
    assert run_cli("run", *argv, "--model", "test_resnet", "--data-root", mini_root, "--out", out) == 2
    _one_line_error(capsys, pattern)
    _no_record(out)


def test_cuda_without_a_gpu(mini_root, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert run_cli("run", "--protocol", "knn", "--device", "cuda", "--data-root", mini_root, "--out", tmp_path) == 2
    _one_line_error(capsys, r"--device cuda: 0 CUDA device\(s\) visible; use --device cpu")


def test_every_shipped_preset_passes_the_range_validator():
    from bench.presets import load_protocol_yaml, resolve_preset
    from bench.protocols import get_protocol
    for protocol in ("knn", "linear", "logreg", "semisup", "transfer", "retrieval", "segmentation", "detection"):
        spec = get_protocol(protocol)
        for name in load_protocol_yaml(protocol)["presets"]:
            resolve_preset(protocol, spec.preset_cls, name)


def test_out_is_a_file_or_unwritable(mini_root, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert run_cli("run", "--protocol", "knn", "--data-root", mini_root, "--out", tmp_path / "file") == 2
    _one_line_error(capsys, r"is a file, not a folder")
    if os.geteuid() == 0:
        return   # root writes anywhere; the permission case cannot be staged
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run_cli("run", "--protocol", "knn", "--data-root", mini_root, "--out", locked / "r") == 2
    _one_line_error(capsys, r"not writable")


def test_disk_full_while_writing_the_record_is_one_line(mini_root, tmp_path, capsys, monkeypatch):
    import bench.records as records

    def full(path, obj):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(records, "atomic_write_json", full)
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", "knn", "--data-root", mini_root, "--resolution", "32", "--out", out) == 2
    _one_line_error(capsys, r"runs/.*\.json: No space left on device; free disk space")
    _no_record(out)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CheckpointError):
        run_cli("--debug", "inspect", tmp_path / "missing.pth")


# ---- checkpoints and the registry -------------------------------------------------------------------------------

def test_text_file_as_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.pth").write_text("this is not a checkpoint\n" * 20)
    assert run_cli("inspect", tmp_path / "notes.pth") == 2
    _one_line_error(capsys, r"notes.pth: not a PyTorch .* or safetensors file")


def test_safetensors_metadata_pickle_is_never_unpickled(tmp_path, capsys):
    from safetensors.torch import save_file
    from bench.backbones._export import METADATA_KEY
    marker = tmp_path / "executed"
    evil = pickle.dumps(_Payload(marker), protocol=0).decode("latin1")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m.safetensors"), metadata={METADATA_KEY: evil})
    shutil.copy(tmp_path / "m.safetensors", tmp_path / "m.pth")    # same bytes under a torch suffix
    for name in ("m.safetensors", "m.pth"):
        assert run_cli("inspect", tmp_path / name) == 2
        _one_line_error(capsys, rf"{name}: ")
    assert not marker.exists()


@pytest.mark.parametrize("file", ["../../escape_file.pth", "/tmp/abs.pth", "sub/x.pth", "..", ".hidden.pth"])
def test_registry_file_names_stay_in_the_cache(file, tmp_path):
    from bench.backbones import zoo
    reg = tmp_path / "checkpoints.yaml"
    reg.write_text(f"checkpoints:\n- name: evil\n  url: https://example.org/x.pth\n  file: '{file}'\n"
                   f"  family: swav\n  arch: resnet50\n  source: test\n")
    with pytest.raises(CheckpointError, match="must be a plain file name"):
        zoo.load_registry(reg)


def _fake_urlopen(payload: bytes, claimed: int):
    class Resp(io.BytesIO):
        headers = {"Content-Length": str(claimed)}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    return lambda url, timeout: Resp(payload)


def test_interrupted_download_keeps_nothing_and_stale_parts_go(tmp_path, monkeypatch, capsys):
    from bench.backbones import zoo
    entry = zoo.CheckpointEntry(name="tiny", url="https://example.org/tiny.pth", family="swav", arch="resnet18",
                                source="test")
    monkeypatch.setattr(zoo, "get_entry", lambda name: entry if name == "tiny" else None)
    dest = zoo.checkpoint_file(entry, tmp_path)
    dest.parent.mkdir(parents=True)
    # left by a kill -9 of an earlier download: ours, an earlier bench's, torch.hub's
    for stale in (dest.parent / f".{dest.name}.abc123.part", dest.parent / f"{dest.stem}-partial{dest.suffix}",
                  dest.parent / f"{dest.name}.0123abcd.partial"):
        stale.write_bytes(b"half")
        os.utime(stale, (0, 0))
    monkeypatch.setattr(zoo.urllib.request, "urlopen", _fake_urlopen(b"x" * 100, 1000))
    with pytest.raises(CheckpointError, match="stopped at 100 of 1000 bytes"):
        zoo.fetch_checkpoint("tiny", tmp_path)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


# ---- data files ---------------------------------------------------------------------------------------------------

@pytest.fixture
def own_mini(mini_root, tmp_path):
    """A private copy of the miniature root (the shared one must stay intact for other tests)."""
    def copy(*names):
        root = tmp_path / "mini"
        root.mkdir(exist_ok=True)
        shutil.copy(mini_root / "BENCH_MINI.json", root / "BENCH_MINI.json")
        for n in names:
            shutil.copytree(mini_root / n, root / n)
        return root
    return copy


@pytest.mark.parametrize("victim", ["batches.meta", "data_batch_1", "test_batch"])
def test_cifar_pickle_payload_is_refused_not_run(victim, own_mini, tmp_path):
    from bench.data import open_dataset
    root = own_mini("cifar-10-batches-py")
    marker = tmp_path / "executed"
    (root / "cifar-10-batches-py" / victim).write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [0],
                                                                      "label_names": _Payload(marker)}))
    split = "test" if victim == "test_batch" else "trainval"
    with pytest.raises(DataError, match=rf"{victim}: refused or unreadable pickle \(global posix.system"):
        open_dataset("cifar10", root, split, None, mini=True)
    assert not marker.exists()


def test_cifar_reads_the_same_as_torchvision(own_mini):
    """The allowlist reader yields torchvision's arrays and labels for intact files."""
    import torchvision
    from bench.data import open_dataset
    root = own_mini("cifar-10-batches-py")
    ours = open_dataset("cifar10", root, "trainval", None, mini=True)

    class Plain(torchvision.datasets.CIFAR10):
        def _check_integrity(self):
            return True

        def _load_meta(self):
            with open(Path(self.root) / self.base_folder / "batches.meta", "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")["label_names"]
    ref = Plain(str(root), train=True)
    assert np.array_equal(ours.data, ref.data) and ours.targets == ref.targets and ours.classes == ref.classes


def test_val_classes_are_matched_to_train_by_name(own_mini):
    from bench.data import open_dataset
    root = own_mini("imagenet")
    val = root / "imagenet" / "val"
    dropped = sorted(p.name for p in val.iterdir())[:2]
    for name in dropped:
        shutil.rmtree(val / name)
    train = open_dataset("imagenet", root, "train", None, mini=True)
    ds = open_dataset("imagenet", root, "val", None, mini=True)
    for path, target in ds.samples:
        assert train.class_to_idx[Path(path).parent.name] == target   # not renumbered from 0
    assert min(ds.targets) == 2
    foreign = val / "n99999999"
    foreign.mkdir()
    shutil.copy(ds.samples[0][0], foreign / "x.JPEG")
    with pytest.raises(DataError, match=r"n99999999.*not in .*train"):
        open_dataset("imagenet", root, "val", None, mini=True)


def test_truncated_jpeg_is_named(own_mini):
    from bench.data import open_dataset
    root = own_mini("imagenet")
    ds = open_dataset("imagenet", root, "train", None, mini=True)
    path = Path(ds.samples[5][0])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: unreadable image"):
        ds[5]


VOC_XML = [
    ("malformed", b"<annotation><object><name>dog</name>", "malformed VOC annotation XML"),
    ("xxe", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<annotation><object><name>&x;</name></object></annotation>", "DTD/entity declaration"),
    ("billion-laughs", b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                       b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
                       b"<annotation>&lol2;</annotation>", "DTD/entity declaration"),
    ("no-bndbox", b"<annotation><object><name>dog</name></object></annotation>", "without a valid object"),
]


@pytest.mark.parametrize("name,xml,pattern", VOC_XML, ids=[c[0] for c in VOC_XML])
def test_bad_voc_xml_is_one_line(name, xml, pattern, tmp_path):
    from bench.data.voc import parse_voc_xml, voc_objects
    from torchvision.datasets import VOCDetection
    path = tmp_path / f"{name}.xml"
    path.write_bytes(xml)
    with pytest.raises(DataError, match=pattern):
        voc_objects(VOCDetection.parse_voc_xml(parse_voc_xml(path)), str(path))


# ---- records and tables -------------------------------------------------------------------------------------------

def test_table_skips_a_malformed_record_and_renders_the_rest(mini_root, tmp_path, caplog):
    import json
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", "knn", "--data-root", mini_root, "--resolution", "32", "--out", out) == 0
    good = next((out / "runs").glob("*.json"))
    rec = json.loads(good.read_text())
    for name, field, value in (("bad-metrics", "metrics", [1, 2]), ("bad-ckpt", "checkpoint", "resnet")):
        (out / "runs" / f"{name}.json").write_text(json.dumps({**rec, field: value}))
    assert run_cli("table", "--results", out, "--no-plots") == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "bad-metrics.json" in warned and "bad-ckpt.json" in warned
    assert "knn" in " ".join(p.name for p in out.glob("*.md"))


def test_bench_error_from_a_worker_prints_its_own_line(capsys):
    from bench.cli import main
    import bench.cli as cli

    class Wrapped(DataError):
        pass
    msg = "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  ...\n" \
          "bench.errors.DataError: /x/y.JPEG: unreadable image (truncated); replace it"
    assert isinstance(Wrapped(msg), BenchError)
    orig = cli._main
    try:
        cli._main = lambda argv: (_ for _ in ()).throw(Wrapped(msg))
        assert main(["list"]) == 2
    finally:
        cli._main = orig
    _one_line_error(capsys, r"^bench: error: /x/y.JPEG: unreadable image")


# ---- kill during extraction ---------------------------------------------------------------------------------------

def test_killed_extraction_leaves_no_cache_entry_and_reruns_identically(tmp_path):
    from bench.backbones import load_backbone
    from bench.cache import extract_features

    class Images(torch.utils.data.Dataset):
        def __init__(self, fail_after=10 ** 6):
            self.reads, self.fail_after = 0, fail_after

        def __len__(self):
            return 12

        def __getitem__(self, i):
            self.reads += 1
            if self.reads > self.fail_after:
                raise KeyboardInterrupt
            return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 3

    bb = load_backbone(None, "test_resnet")
    kw = dict(split="val", dataset_name="toy", feature_mode="pool", transform={}, data_root="toy", batch_size=4)
    reference = extract_features(bb, Images(), cache_dir=None, **kw)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        extract_features(bb, Images(fail_after=6), cache_dir=cache, **kw)
    assert not list(cache.rglob("*.npz")), "a killed extraction must not leave a cache entry"
    again = extract_features(bb, Images(), cache_dir=cache, **kw)
    assert not again.meta["cache_hit"]
    np.testing.assert_array_equal(again.features, reference.features)
    np.testing.assert_array_equal(again.labels, reference.labels)


# ---- a corrupt JPEG among good ones in linear training ------------------------------------------------------------

def test_corrupt_training_image_is_named_or_skipped_and_counted(own_mini, tmp_path):
    from test_linear import _tiny_ctx
    from bench.runner import run_protocol
    root = own_mini("imagenet")
    victim = sorted((root / "imagenet" / "train").rglob("*.*"))[7]
    victim.write_bytes(victim.read_bytes()[:150])       # truncated mid-file, as an interrupted copy leaves it
    overrides = {"quick_epochs": 1, "quick_batch_size": 64, "quick_train_images": 10 ** 6}
    with pytest.raises(DataError, match=rf"{re.escape(str(victim))}: unreadable image"):
        run_protocol("linear", _tiny_ctx(root, tmp_path / "c"), preset="mocov2", overrides=overrides,
                     out_dir=tmp_path / "o1")
    _no_record(tmp_path / "o1")
    ctx = _tiny_ctx(root, tmp_path / "c")
    ctx.skip_bad_images = True
    rec, _, _ = run_protocol("linear", ctx, preset="mocov2", overrides=overrides, out_dir=tmp_path / "o2")
    assert rec["skipped_images"] == {"count": 1, "files": [str(victim)]}
    assert not rec["comparable"] and any("1 unreadable image(s) skipped" in r for r in rec["not_comparable_because"])


def test_val_subset_is_recorded(own_mini, tmp_path):
    import json
    root = own_mini("imagenet")
    for p in sorted((root / "imagenet" / "val").iterdir())[:2]:
        shutil.rmtree(p)
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", "knn", "--model", "test_resnet", "--data-root", root, "--resolution", "32",
                   "--out", out) == 0
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert rec["dataset"]["class_notes"] == {"imagenet/val": "val/ holds 8 of the 10 train/ classes, labelled by name"}


# ---- environment faults -------------------------------------------------------------------------------------------

def test_unwritable_cache_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "file" / "cache"))   # under a file: cannot be created
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", "knn", "--model", "test_resnet", "--out", out) == 2
    _one_line_error(capsys, r"file/cache.*: Not a directory; ")
    _no_record(out)


def test_sigint_during_start_up(monkeypatch, capsys):
    import bench.cli as cli

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["list"]) == 130
    assert capsys.readouterr().err.strip() == "bench: interrupted; finished records and cache entries are kept"


def test_connection_dropped_mid_download(tmp_path, monkeypatch):
    import http.client
    from bench.backbones import zoo
    entry = zoo.CheckpointEntry(name="tiny", url="https://example.org/tiny.pth", family="swav", arch="resnet18",
                                source="test")
    monkeypatch.setattr(zoo, "get_entry", lambda name: entry if name == "tiny" else None)

    class Resp(io.BytesIO):
        headers = {}

        def read(self, n=-1):
            raise http.client.IncompleteRead(b"partial", 1000)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    monkeypatch.setattr(zoo.urllib.request, "urlopen", lambda url, timeout: Resp())
    with pytest.raises(CheckpointError, match=r"tiny: cannot download \(IncompleteRead.*run again"):
        zoo.fetch_checkpoint("tiny", tmp_path)
    assert not list((tmp_path / "checkpoints").iterdir())


def test_no_unsafe_deserialisation_in_the_package():
    """The audit as a guard: every torch.load is weights_only=True except the one behind --trust-checkpoint, no
    np.load allows pickles, and pickle is only ever read through the allowlist / stubbing unpicklers."""
    import re
    from pathlib import Path
    import bench
    offences = []
    for path in Path(bench.__file__).parent.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            where = f"{path.name}:{i}"
            if "torch.load(" in code and "weights_only=True" not in code and not (
                    path.name == "_safe_load.py" and "pickle_module=_StubbingPickle" in code):
                offences.append(where)
            if re.search(r"allow_pickle\s*=\s*True|pickle\.loads?\(|dill\.|joblib\.load|yaml\.load\(|"
                         r"yaml\.unsafe_load|marshal\.loads?\(", code):
                offences.append(where)
    assert offences == []
