"""The leaderboard figures, read from matplotlib's objects (bar labels, tick labels, legend texts), not pixels."""
import pytest

pytest.importorskip("matplotlib")

import matplotlib.pyplot as plt  # noqa: E402

from bench import plots  # noqa: E402
from bench.reference import Documented  # noqa: E402
from bench.tables import Measured, Table  # noqa: E402


PAPER = 'Doe et al. "A paper". NeurIPS 2020.'


def _doc(table, method, arch, metric, value, row, preset="dino", protocol="linear", dataset="imagenet",
         paper=PAPER):
    return Documented(table, paper, protocol, preset, dataset, metric, method, arch, "", value, row)


def _measured(method, arch, values, protocol="linear", dataset="imagenet", preset="dino", reasons=(),
              headline=("top1", "top5")):
    rec = {"headline": list(headline), "dataset": {"name": dataset}, "run_id": method}
    return Measured(protocol, dataset, method, arch, f"{method}.pth", preset, reasons, dict(values), [method], [rec])


def _ytick_texts(ax):
    return [t.get_text() for t in ax.get_yticklabels()]


def test_the_cap_keeps_the_measured_methods_own_rows_and_counts_what_it_drops():
    # 40 other methods' rows first in reference order and best by value; DINO's and MoCo v3's own rows last
    docs = [_doc("other_table", f"Method{i}", "ViT-S/16", "top1", f"{90 - i * 0.1:.1f}", i) for i in range(40)]
    docs += [_doc("dino_table", "DINO", "ViT-S/16", "top1", "77.0", 40),
             _doc("mocov3_table", "MoCo v3", "ViT-S/16", "top1", "73.2", 41, preset="mocov3")]
    measured = [_measured("DINO", "vit_small_patch16_224", {"top1": 76.5, "top5": 93.0}),
                _measured("MoCo v3", "vit_small_patch16_224", {"top1": 72.0}, preset="mocov3")]
    fig = plots.vs_documented_figure(Table("linear", "imagenet", docs, measured))
    (ax,) = fig.axes
    labels = _ytick_texts(ax)
    # a reader's label: method, arch, who and when; never the reference table's file name
    assert "DINO ViT-S/16 — Doe et al. 2020" in labels and "MoCo v3 ViT-S/16 — Doe et al. 2020" in labels
    assert not any("_table" in t for t in labels)
    documented = [t for t in labels if t.endswith("— Doe et al. 2020")]
    assert len(documented) == plots.MAX_DOCUMENTED_BARS
    assert f"({42 - plots.MAX_DOCUMENTED_BARS} more documented rows in the table)" in ax.get_title()
    assert ax.get_xlabel() == "top-1 (%)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["documented (paper)", "measured"]
    plt.close(fig)


def test_segmentation_plots_miou_and_retrieval_plots_medium_and_hard():
    seg_docs = [_doc("t", "BEiT", "ViT-B/16", m, v, 0, "upernet", "segmentation", "ade20k")
                for m, v in (("aAcc", "82.0"), ("mIoU", "45.6"))]
    seg = [_measured("mae", "vit_base_patch16_224", {"aAcc": 80.0, "mAcc": 55.0, "mIoU": 44.0}, "segmentation",
                     "ade20k", "upernet", ("miniature data",), ("mIoU", "mAcc", "aAcc"))]
    fig = plots.vs_documented_figure(Table("segmentation", "ade20k", seg_docs, seg))
    (ax,) = fig.axes
    assert ax.get_xlabel() == "mIoU (%)" and "mIoU" in ax.get_title()
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == [44.0, 45.6], "the bars are the mIoU values, not the alphabetically first aAcc"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["documented (paper)", "measured, not comparable"]
    plt.close(fig)
    ret = [_measured("dino", "vit_small_patch16_224", {"mAP_E": 60.0, "mAP_H": 13.0, "mAP_M": 40.0}, "retrieval",
                     "roxford5k", "gem", (), ("mAP_M", "mAP_H"))]
    fig = plots.vs_documented_figure(Table("retrieval", "roxford5k", [], ret))
    assert [a.get_xlabel() for a in fig.axes] == ["mAP, Medium (%)", "mAP, Hard (%)"]
    assert [a.patches[0].get_width() for a in fig.axes] == [40.0, 13.0]
    plt.close(fig)


def _knn_record(name, values, comparable=True):
    return {"protocol": "knn", "preset": "dino", "metrics": values, "headline": ["top1"], "comparable": comparable,
            "not_comparable_because": [] if comparable else ["miniature data"], "run_id": name,
            "checkpoint": {"name": f"{name}.pth", "arch": "resnet50", "family": name, "sha256": name},
            "dataset": {"name": "imagenet"}, "preset_settings": {}, "fingerprint": name}


def test_knn_plot_has_the_k_values_as_ticks_and_one_legend_entry_per_line():
    records = [_knn_record("a", {"top1": 70.0, "top1_k10": 69.0, "top1_k20": 70.0, "top1_k200": 66.0}),
               _knn_record("b", {"top1": 60.0, "top1_k20": 60.0, "top1_k100": 58.0}, comparable=False)]
    (fig,) = plots.knn_over_k_figures(records).values()
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "20", "100", "200"]
    assert list(ax.get_xticks()) == [10, 20, 100, 200]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == len(set(legend)) == 2 and legend[1].endswith(" *")
    assert ax.get_ylabel() == "top-1 (%)"
    plt.close(fig)


def _doc_table(protocol, dataset, entries):
    return Table(protocol, dataset, [_doc(t, m, a, metric, v, i, preset, protocol, dataset)
                                     for i, (t, m, a, metric, v, preset) in enumerate(entries)], [])


def test_semisup_and_transfer_plots_show_the_papers_numbers_beside_the_measured_ones():
    semisup = _doc_table("semisup", "imagenet", [
        ("byol_semisup", "BYOL (ours)", "ResNet-50", "top1@1%", "53.2", "byol"),
        ("byol_semisup", "BYOL (ours)", "ResNet-50", "top1@10%", "68.8", "byol"),
        ("byol_semisup", "BYOL (ours)", "ResNet-50", "top5@1%", "78.4", "byol")])
    rec = {"protocol": "semisup", "preset": "byol", "metrics": {"top1": 50.0}, "comparable": True,
           "checkpoint": {"name": "byol.pth", "arch": "resnet50", "family": "byol"}, "dataset": {"name": "imagenet"},
           "details": {"label_percent": 1}, "fingerprint": "1"}
    rec10 = {**rec, "metrics": {"top1": 66.0}, "details": {"label_percent": 10}, "fingerprint": "2"}
    fig = plots.label_efficiency_figure([rec, rec10], [semisup])
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["paper: BYOL ResNet-50 — Doe et al. 2020", "byol.pth resnet50 [byol]"]
    paper, measured = ax.get_lines()
    assert list(paper.get_ydata()) == [53.2, 68.8] and list(measured.get_ydata()) == [50.0, 66.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1%", "10%"] and ax.get_ylabel() == "top-1 (%)"
    plt.close(fig)

    food = _doc_table("transfer", "food101", [("simclr_t", "SimCLR", "", "top1", "76.9", "linear"),
                                              ("simclr_t", "Supervised", "", "top1", "75.2", "linear")])
    dtd = _doc_table("transfer", "dtd", [("simclr_t", "SimCLR", "", "top1", "75.7", "linear")])
    trec = {"protocol": "transfer", "preset": "linear", "metrics": {"food101": 70.0, "dtd": 60.0, "mean": 65.0},
            "comparable": False, "checkpoint": {"name": "m.pth", "arch": "resnet50"}, "fingerprint": "3"}
    fig = plots.transfer_figure([trec], [food, dtd])
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["m.pth resnet50 [linear] *", "paper: SimCLR — Doe et al. 2020",
                      "paper: Supervised — Doe et al. 2020"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dtd", "food101"]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:4] == [60.0, 70.0, 75.7, 76.9]
    assert heights[4] != heights[4] and heights[5] == 75.2, "Supervised has no dtd number (NaN bar)"
    assert ax.get_ylabel() == "score (%)"
    plt.close(fig)


def test_metric_labels_carry_units():
    assert plots.metric_label("top1") == "top-1 (%)"
    assert plots.metric_label("top1@10%") == "top-1 at 10% labels (%)"
    assert plots.metric_label("mCE") == "mCE (%, lower is better)"
    assert plots.metric_label("top1_res4") == "top-1, res4 (%)"


def test_miniature_rows_get_their_own_axis_and_a_number_two_papers_print_is_one_bar():
    """A miniature row's 95% never sits on the axis of the papers' ImageNet numbers; SwAV RN50's 65.7 printed by
    two papers is one bar naming both."""
    docs = [_doc("t1", "SwAV [12]", "RN50", "top1", "65.7", 0, preset="dino", protocol="knn"),
            _doc("t2", "SwAV", "ResNet-50", "top1", "65.7", 1, preset="dino", protocol="knn",
                 paper='Roe et al. "Another". ICCV 2021.'),
            _doc("t1", "DINO", "RN50", "top1", "67.5", 2, preset="dino", protocol="knn")]
    mini = _measured("supervised", "resnet18", {"top1": 95.0}, protocol="knn", reasons=("miniature data",))
    mini.records[0]["dataset"]["mini"] = True
    full = _measured("dino", "resnet50", {"top1": 67.0}, protocol="knn")
    fig = plots.vs_documented_figure(Table("knn", "imagenet", docs, [mini, full]))
    papers_ax, mini_ax = fig.axes[:2]
    assert "miniature" in mini_ax.get_title() and "miniature" not in papers_ax.get_title()
    assert [p.get_width() for p in mini_ax.patches] == [95.0]
    assert 95.0 not in [p.get_width() for p in papers_ax.patches]
    swav = [t for t in _ytick_texts(papers_ax) if t.startswith("SwAV")]
    assert swav == ["SwAV RN50 — Doe et al. 2020; Roe et al. 2021"]
    plt.close(fig)
