"""`bench table --coverage`: each reference table's documented rows and the registered checkpoints that measure
them. Checked on um_mae_pyramid_vits (six rows) with hand-made registries, then the real checkpoints.yaml."""
from bench.backbones.zoo import CheckpointEntry, Unavailable
from bench.coverage import LOADS, NONE, REGISTERED, UNAVAILABLE, coverage_rows, entry_problems, render_coverage


def _entry(name, **kw):
    base = dict(url=f"https://x.invalid/{name}.pth", family="torchvision-resnet", layout="flat", arch="resnet50")
    return CheckpointEntry(name=name, **{**base, **kw})


def _rows(registry, unavailable=(), table="um_mae_pyramid_vits"):
    return {(r.method, r.arch): r for r in coverage_rows(registry, tuple(unavailable)) if r.table == table}


def test_entry_problems_name_what_is_missing():
    assert entry_problems(_entry("ok")) == []
    bad = _entry("bad", url=None, layout="no-such-layout", family="no-such-family", arch="no_such_arch")
    assert entry_problems(bad) == ["no direct download (checkpoints.yaml how_to_get)",
                                   "layout no-such-layout not in this bench", "family no-such-family not in this bench",
                                   "arch no_such_arch not buildable"]
    assert entry_problems(_entry("tv", arch="tv:resnet18", layout=None)) == ["layout not verified"]
    assert entry_problems(_entry("noarch", arch=None)) == ["no timm/torchvision arch"]


def test_rows_are_met_by_citation_or_by_method_and_arch():
    cites = _entry("cites_ummae_swin", arch="swin_tiny_patch4_window7_224", family="timm-vit",
                   numbers=({"table": "um_mae_pyramid_vits.csv", "method": "UM-MAE (ours)", "arch": "Swin-T",
                             "protocol": "finetune", "metric": "top1", "value": 82.04},))
    by_method = _entry("simmim_pvt", method="SimMIM", arch=None, layout="um-mae-pyramid", url=None)
    rows = _rows({e.name: e for e in (cites, by_method)},
                 [Unavailable("UM-MAE", "fine-tuned weights only", arch="PVT-S", tables=("um_mae_pyramid_vits",))])
    assert len(rows) == 6
    r = rows[("UM-MAE (ours)", "Swin-T")]
    assert (r.status, r.checkpoints, r.why) == (LOADS, ("cites_ummae_swin",), "")
    assert rows[("SimMIM [42]", "PVT-S")].status == NONE          # a method match needs the arch to match too
    r = rows[("UM-MAE (ours)", "PVT-S")]
    assert (r.status, r.why) == (UNAVAILABLE, "fine-tuned weights only")
    assert rows[("Supervised from Scratch (Baseline)", "Swin-T")].status == NONE


def test_method_and_arch_match_like_the_leaderboards():
    simclr = _entry("my_simclr", method="SimCLR", notes="a re-implementation")
    rows = _rows({"my_simclr": simclr}, table="simclr_imagenet_linear")
    r = rows[("SimCLR (ours)", "ResNet-50")]
    assert (r.status, r.checkpoints, r.why) == (LOADS, ("my_simclr",), "my_simclr: a re-implementation")
    assert rows[("SimCLR (ours)", "ResNet-50 (2×)")].status == NONE   # another width is another row


def test_a_registered_entry_that_cannot_load_says_why():
    blocked = _entry("swin_pending", arch="swin_tiny_patch4_window7_224", layout="not-yet", url=None,
                     how_to_get="Google Drive", numbers=({"table": "um_mae_pyramid_vits.csv", "arch": "Swin-T",
                                                          "method": "UM-MAE (ours)"},))
    r = _rows({"swin_pending": blocked})[("UM-MAE (ours)", "Swin-T")]
    assert r.status == REGISTERED and r.checkpoints == ("swin_pending",)
    assert r.why == "swin_pending: no direct download (checkpoints.yaml how_to_get), layout not-yet not in this bench"


def test_coverage_of_the_real_registry(capsys):
    from bench.cli import main
    assert main(["table", "--coverage"]) == 0
    out = capsys.readouterr().out
    assert out == render_coverage(coverage_rows())
    assert "| `milan_finetune` | 34 |" in out                     # every reference table has its summary line
    assert "| PeCo [18] | ViT-B/16 | no public checkpoint |" in out
    assert "| MAE [25] | ViT-B/16 | loads | mae_vit_base |" in out
    assert "| EsViT | Swin-T/7 | registered | esvit_swin_tiny_w7 |" in out or \
        "| EsViT | Swin-T/7 | loads | esvit_swin_tiny_w7 |" in out   # loads once its layout is in this bench


def test_leaderboard_checkpoint_cell_of_a_documented_row():
    """Same table, method and arch, told apart by the printed value: iBOT's ViT-L/16 pre-trained on IN-1K (81.0,
    ibot_vitl16's row) and on IN-22K (82.3, no registered checkpoint)."""
    from bench.coverage import registered_for
    assert registered_for("ibot_knn_linear", "iBOT", "ViT-L/16", ["81.0", ""]) == "ibot_vitl16"
    assert registered_for("ibot_knn_linear", "iBOT", "ViT-L/16", ["82.3"]) == ""
    row1, row3 = ("pre-trained 224; ablation row 1 of 13; pre-training optimizer=adamw",
                  "pre-trained 224; ablation row 3 of 13; pre-training optimizer=adamw")
    assert registered_for("deit_ablation", "DeiT", "", ["81.8"], row1) == "deit_base"
    assert registered_for("deit_ablation", "DeiT", "", ["81.8"], row3) == ""     # same number, other recipe
