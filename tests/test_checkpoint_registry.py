"""checkpoints.yaml: every entry is loadable in principle, its numbers come from the cited table, and --ckpt NAME
uses the cache without network, downloads with a checksum check, and says what to do when offline."""
import os
import urllib.error
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from bench import load_backbone
from bench.backbones import zoo
from bench.backbones._deepcluster import DEEPCLUSTER_ARCHS
from bench.backbones.families import FAMILIES
from bench.backbones.features import FEATURE_MODES
from bench.backbones.layouts import list_layouts
from bench.errors import CheckpointError

REFERENCE = [Path(os.environ.get("BENCH_REFERENCE", "/nonexistent")), Path(__file__).parents[2] / "shared/reference",
             Path("/work/shared/reference")]


# Families named in checkpoints.yaml ahead of their loaders (UM-MAE's PVT/Swin blocks and CAE's ViT have no model
# here yet): an entry may name one before this bench registers it; `bench table --coverage` says such rows do not load.
PENDING_LAYOUTS: set[str] = set()
PENDING_FAMILIES = {"um-mae", "cae"}


def _buildable(arch):
    name = arch.removeprefix("tv:")
    return timm.is_model(name) or name in torchvision.models.list_models() or name in DEEPCLUSTER_ARCHS


def test_every_entry_names_known_things():
    entries = zoo.load_registry()
    layouts = {lay.name for lay in list_layouts()} | PENDING_LAYOUTS
    families = set(FAMILIES.names()) | PENDING_FAMILIES
    used = {e.layout for e in entries.values()} | {e.family for e in entries.values()}
    assert (PENDING_LAYOUTS | PENDING_FAMILIES) <= used      # no stale pending name
    assert not PENDING_LAYOUTS & {lay.name for lay in list_layouts()} and not PENDING_FAMILIES & set(FAMILIES.names())
    wanted = ["mae_vit_base", "mae_vit_large", "mae_vit_huge", "dino_vits16", "dino_vits8", "dino_vitb16",
              "dino_vitb8", "dino_resnet50", "dinov2_vits14", "mocov2_800ep", "mocov3_r50_1000ep",
              "mocov3_vit_small", "mocov3_vit_base", "simclrv1_r50_1x", "simclrv2_r50_1x_sk0", "byol_r50",
              "swav_800ep", "barlowtwins_r50", "vicreg_r50", "simsiam_100ep", "beit_base_pt22k", "ibot_vits16",
              "data2vec_vit_base", "deepclusterv2_800ep", "deepcluster_alexnet", "deepcluster_vgg16"]
    assert set(wanted) <= set(entries)
    for e in entries.values():
        assert e.family in families and e.feature_mode in FEATURE_MODES, e.name
        # layout null: the file's keys could not be read at a source; no arch: no timm/torchvision model has it
        assert e.layout in layouts or (e.layout is None and (e.notes or e.how_to_get)), e.name
        assert _buildable(e.arch) if e.arch else e.notes, e.name
        assert e.url or e.how_to_get, e.name
        if e.url and not e.url.startswith((zoo.MINI_SCHEME, zoo.PACKAGE_SCHEME)):
            assert e.url.startswith("https://") and "drive.google.com" not in e.url, e.name   # Drive: how_to_get
        if e.sha256_prefix:   # the publisher's file name carries it (torch.hub / OpenMMLab convention)
            assert set(e.sha256_prefix) <= set("0123456789abcdef") and e.sha256_prefix in e.url.rsplit("/", 1)[-1]
        if e.url and e.url.startswith((zoo.MINI_SCHEME, zoo.PACKAGE_SCHEME)):   # bench's own miniatures: no paper numbers
            assert not e.numbers, e.name
            continue
        assert e.numbers and all({"protocol", "metric", "value", "table"} <= set(n) for n in e.numbers), e.name
    assert len({e.filename for e in entries.values()}) == len(entries)   # no two entries share a cache file


def test_numbers_are_the_cited_tables_rows():
    import pandas as pd
    root = next((r for r in REFERENCE if r.is_dir()), None)
    if root is None:
        pytest.skip("shared/reference tables not available")
    checked = 0
    for e in zoo.load_registry().values():
        for n in e.numbers:
            if n["table"].startswith("readme:"):
                continue
            df = pd.read_csv(root / n["table"], dtype=str).fillna("")
            rows = df[(df.method == n["method"]) & (df.protocol == n["protocol"]) & (df.metric == n["metric"])]
            if "arch" in n:
                rows = rows[rows.arch == n["arch"]]
            if "setting" in n:
                rows = rows[rows.split_or_setting.str.contains(n["setting"], regex=False)]
            assert any(float(v) == n["value"] for v in rows.value if v), (e.name, n)
            checked += 1
    assert checked >= 30


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """A registry with one resnet18 entry (real entries are full-size models) and no network at all."""
    (tmp_path / "checkpoints.yaml").write_text(
        "checkpoints:\n  - name: tiny_swav\n    url: https://example.invalid/swav_tiny.pth.tar\n"
        "    md5_prefix: \"0000\"\n    source: test\n    family: swav\n    layout: module-prefixed\n"
        "    arch: resnet18\n    feature_mode: pool\n    numbers: []\n")
    monkeypatch.setattr(zoo, "registry_path", lambda: tmp_path / "checkpoints.yaml")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))

    def no_network(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(zoo.urllib.request, "urlopen", no_network)
    return zoo.get_entry("tiny_swav")


def test_offline_name_says_which_url_and_where(tiny_registry):
    dest = zoo.checkpoint_file(tiny_registry)
    with pytest.raises(CheckpointError, match=rf"fetch https://example.invalid/swav_tiny.pth.tar and put it at {dest}"):
        load_backbone("tiny_swav")


def test_cached_file_is_used_without_network_and_checksummed(tiny_registry, monkeypatch):
    dest = zoo.checkpoint_file(tiny_registry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    m = torchvision.models.resnet18()
    torch.save({f"module.{k}": v for k, v in m.state_dict().items()}, dest)
    with pytest.raises(CheckpointError, match="md5 does not start with 0000"):
        load_backbone("tiny_swav")
    import hashlib
    md5 = hashlib.md5(dest.read_bytes()).hexdigest()
    monkeypatch.setattr(zoo, "get_entry", lambda name: zoo.CheckpointEntry(
        **{**tiny_registry.__dict__, "md5_prefix": md5[:6]}) if name == "tiny_swav" else None)
    bb = load_backbone("tiny_swav")
    assert bb.report.registry_name == "tiny_swav" and bb.report.family == "swav" and bb.report.coverage == 1.0
    assert bb.report.preprocessing["std"] == (0.228, 0.224, 0.225)


def test_download_writes_the_file_and_checks_it(tiny_registry, monkeypatch):
    import io
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({f"module.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()}, buf)

    class Resp(io.BytesIO):
        headers = {"Content-Length": str(len(buf.getvalue()))}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    monkeypatch.setattr(zoo.urllib.request, "urlopen", lambda url, timeout: Resp(buf.getvalue()))
    with pytest.raises(CheckpointError, match="md5 does not start"):   # bad bytes are set aside, not used
        load_backbone("tiny_swav")
    dest = zoo.checkpoint_file(tiny_registry)
    assert not dest.exists() and Path(str(dest) + ".bad").read_bytes() == buf.getvalue()


@pytest.fixture(scope="module")
def http_server():
    """A local HTTP server (no internet): /good.pth is served whole; /short.pth claims 1000 bytes, sends 100 and
    closes, as a dropped connection does."""
    import http.server
    import threading
    body = bytes(range(256)) * 8

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            payload, claimed = (body, len(body)) if self.path == "/good.pth" else (b"x" * 100, 1000)
            self.send_response(200)
            self.send_header("Content-Length", str(claimed))
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", body
    server.shutdown()
    server.server_close()


def _served_entry(monkeypatch, url, **checksum):
    entry = zoo.CheckpointEntry(name="served", url=url, family="swav", arch="resnet18", source="test", **checksum)
    monkeypatch.setattr(zoo, "get_entry", lambda name: entry if name == "served" else None)
    return entry


def test_download_over_http_verifies_and_keeps_the_umask_mode(http_server, tmp_path, monkeypatch):
    import hashlib
    base, body = http_server
    _served_entry(monkeypatch, f"{base}/good.pth", sha256=hashlib.sha256(body).hexdigest())
    old = os.umask(0o027)
    try:
        path, _ = zoo.fetch_checkpoint("served", tmp_path)
    finally:
        os.umask(old)
    assert path.read_bytes() == body and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == [path.name]         # no temp file left


def test_truncated_http_body_keeps_nothing(http_server, tmp_path, monkeypatch):
    base, _ = http_server
    _served_entry(monkeypatch, f"{base}/short.pth")                       # no checksum: the length must catch it
    with pytest.raises(CheckpointError, match="stopped at 100 of 1000 bytes"):
        zoo.fetch_checkpoint("served", tmp_path)
    assert not list((tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("checksum", [{"sha256": "0" * 64}, {"md5_prefix": "ffff"}, {"sha256_prefix": "ffffffff"}])
def test_wrong_hash_over_http_is_set_aside(checksum, http_server, tmp_path, monkeypatch):
    base, body = http_server                                             # its md5 starts with 1576, not ffff
    entry = _served_entry(monkeypatch, f"{base}/good.pth", **checksum)
    with pytest.raises(CheckpointError, match="sha256 differs|md5 does not start|sha256 does not start"):
        zoo.fetch_checkpoint("served", tmp_path)
    dest = zoo.checkpoint_file(entry, tmp_path)
    assert not dest.exists() and Path(str(dest) + ".bad").read_bytes() == body


def test_sha256_prefix_of_the_published_name_is_checked(http_server, tmp_path, monkeypatch):
    import hashlib
    base, body = http_server
    _served_entry(monkeypatch, f"{base}/good.pth", sha256_prefix=hashlib.sha256(body).hexdigest()[:8])
    path, _ = zoo.fetch_checkpoint("served", tmp_path)
    assert path.read_bytes() == body


def _registry(tmp_path, monkeypatch, text):
    (tmp_path / "checkpoints.yaml").write_text(text)
    monkeypatch.setattr(zoo, "registry_path", lambda: tmp_path / "checkpoints.yaml")


def test_no_public_checkpoint_section_is_parsed_and_checked(tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, "checkpoints: []\nno_public_checkpoint:\n"
              "  - {method: PeCo, tables: [milan_finetune], reason: none released}\n"
              "  - {method: UM-MAE, arch: Swin-L, reason: no link}\n")
    items = zoo.load_unavailable()
    assert [(u.method, u.arch, u.tables) for u in items] == [("PeCo", None, ("milan_finetune",)),
                                                           ("UM-MAE", "Swin-L", ())]
    _registry(tmp_path, monkeypatch, "checkpoints: []\nno_public_checkpoint:\n  - {method: PeCo, why: typo}\n")
    with pytest.raises(CheckpointError, match="needs method and reason"):
        zoo.load_unavailable()


def test_recognise_file_by_sha256_then_unique_published_name(tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, """checkpoints:
  - {name: a, url: "https://x.invalid/a/model-0123abcd.pth", sha256_prefix: "0123abcd", family: dino}
  - {name: b, url: "https://x.invalid/b/checkpoint_best.pth", family: dino}
  - {name: c, url: "https://x.invalid/c/checkpoint_best.pth", file: c_own.pth, family: dino}
  - {name: d, url: "https://x.invalid/d/full.pth", sha256: "%s", family: dino}
  - {name: mini_x, url: "mini:mini_x", file: mini_x-v3.pth, family: dino}
""" % ("ab" * 32))
    assert zoo.recognise_file("renamed.pth", "0123abcd" + "0" * 56)[0].name == "a"     # sha256 beats the name
    assert zoo.recognise_file("full.pth", "AB" * 32) == (zoo.get_entry("d"), "sha256")
    assert zoo.recognise_file("dir/model-0123abcd.pth") == (zoo.get_entry("a"), "file name")
    assert zoo.recognise_file("c_own.pth")[0].name == "c"
    assert zoo.recognise_file("b-checkpoint_best.pth")[0].name == "b"    # where --ckpt NAME caches it
    assert zoo.recognise_file("checkpoint_best.pth") is None             # two entries publish that name
    assert zoo.recognise_file("mini_x-v3.pth") is None                   # bench's miniatures: by name only
    assert zoo.recognise_file("other.pth", "ff" * 32) is None
