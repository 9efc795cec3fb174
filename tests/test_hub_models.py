"""`--model arch.tag` / `--model hf-hub:org/name` load the published weights from the Hugging Face cache (offline),
and the record names them; without the cache the run stops with one line instead of evaluating a random model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """huggingface_hub's cache layout for timm/test_vit.r160_in1k: models--org--name/{refs/main, snapshots/<rev>/}."""
    root = tmp_path_factory.mktemp("hf") / "hub"
    repo = root / "models--timm--test_vit.r160_in1k"
    snap = repo / "snapshots" / REVISION
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    torch.manual_seed(3)
    ref = timm.create_model("test_vit", num_classes=1000)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snap / "model.safetensors")
    cfg = {"architecture": "test_vit", "num_classes": 1000,
           "pretrained_cfg": {k: v for k, v in ref.pretrained_cfg.items() if k not in ("hf_hub_id", "tag")}}
    (snap / "config.json").write_text(json.dumps(cfg))
    return root, ref


def _env(hub_root, tmp_path):
    return {**os.environ, "HF_HUB_CACHE": str(hub_root), "HF_HUB_OFFLINE": "1", "BENCH_CACHE": str(tmp_path / "c"),
            "PYTHONPATH": str(ROOT), "BENCH_PROGRESS": "0"}


_FEATURES = ("import sys, torch; from bench import load_backbone\nout = {}\nfor name in sys.argv[2:]:\n"
             "    bb = load_backbone(None, name)\n"
             "    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))\n"
             "    out[name] = {'f': bb.features(x).detach(), 'src': bb.report.source, 'sha': bb.report.sha256, "
             "'wid': bb.weights_id}\ntorch.save(out, sys.argv[1])")


def test_tagged_names_load_the_cached_weights_and_bare_names_stay_random(hub_cache, tmp_path):
    hub_root, ref = hub_cache
    names = ["test_vit.r160_in1k", "hf-hub:timm/test_vit.r160_in1k", "test_vit"]
    r = subprocess.run([sys.executable, "-c", _FEATURES, str(tmp_path / "out.pt"), *names], capture_output=True,
                       text=True, env=_env(hub_root, tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    got = torch.load(tmp_path / "out.pt")
    ref.eval().reset_classifier(0)
    ref.set_input_size(img_size=64)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(x)
    for name in names[:2]:
        torch.testing.assert_close(got[name]["f"], expected, rtol=1e-5, atol=1e-5)
        assert got[name]["src"] == f"hf-hub:timm/test_vit.r160_in1k@{REVISION}" and len(got[name]["sha"]) == 64
        assert got[name]["wid"].startswith("hf-hub:timm/test_vit.r160_in1k:")
    assert got["test_vit"]["src"] == "random" and (got["test_vit"]["f"] - expected).abs().max() > 1e-3


def test_record_names_the_weights_and_a_missing_cache_is_one_line(hub_cache, mini_root, tmp_path):
    hub_root, _ = hub_cache
    base = [sys.executable, "-m", "bench", "run", "--protocol", "knn", "--quick", "--data-root", str(mini_root)]
    r = subprocess.run(base + ["--model", "test_vit.r160_in1k", "--out", str(tmp_path / "res")], capture_output=True,
                       text=True, env=_env(hub_root, tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    assert rec["checkpoint"]["name"] == f"hf-hub:timm/test_vit.r160_in1k@{REVISION}"
    assert rec["checkpoint"]["family"] == "timm-pretrained" and len(rec["checkpoint"]["sha256"]) == 64
    r = subprocess.run(base + ["--model", "test_resnet.r160_in1k", "--out", str(tmp_path / "res2")],
                       capture_output=True, text=True, env=_env(hub_root, tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert "not in the Hugging Face cache" in r.stderr and not (tmp_path / "res2" / "runs").exists()


def test_without_network_a_missing_cache_fails_at_once_and_a_cached_one_loads(hub_cache, monkeypatch):
    """No HF_HUB_OFFLINE and no network (an endpoint that refuses): weights not cached give the one-line error in
    well under 2 s with no hub request (huggingface_hub alone retries for about a minute); cached ones load with
    the hub offline."""
    import time

    from huggingface_hub import constants

    from bench import load_backbone
    from bench.errors import CheckpointError
    hub_root, _ = hub_cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_root))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    pretrained_calls = []
    real_create = timm.create_model

    def counting_create(*a, **kw):
        pretrained_calls.append(bool(kw.get("pretrained")))
        return real_create(*a, **kw)
    monkeypatch.setattr(timm, "create_model", counting_create)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="cannot be reached"):
        load_backbone(None, "test_resnet.r160_in1k")
    assert time.perf_counter() - t0 < 2 and True not in pretrained_calls
    bb = load_backbone(None, "test_vit.r160_in1k")
    assert bb.report.source == f"hf-hub:timm/test_vit.r160_in1k@{REVISION}" and constants.HF_HUB_OFFLINE is False
