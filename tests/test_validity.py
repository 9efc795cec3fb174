"""Validity: every protocol ranks a trained backbone above a random-init one, on the miniatures.

Each regression pin in results/expected/ runs on a reference miniature checkpoint (bench/data/mini_checkpoints.py)
and carries a `validity` block: its random twin (the same command with `--ckpt NAME` replaced by a random-init
`--model` of the same architecture) must score at least `margin` lower on `metric`. The margins are stated in
the YAML files with the spread they were chosen against. A protocol that scores random features as well as
trained ones (wrong layer read, labels shuffled, features ignored) fails here even when its pin still holds.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bench.checks import load_expectation, run_expectation

EXPECTED = Path(__file__).resolve().parent.parent / "results" / "expected"
PINS = sorted(EXPECTED.glob("*.yaml"))


def _validity(path: Path) -> dict:
    return yaml.safe_load(path.read_text()).get("validity") or {}


def random_twin_args(args: tuple[str, ...], random: list[str]) -> tuple[str, ...]:
    """`args` with `--ckpt NAME` (and `--arch`) replaced by the random-init backbone options."""
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
            continue
        if a in ("--ckpt", "--arch"):
            skip = 1
            continue
        out.append(a)
    return tuple(out) + tuple(str(r) for r in random)


def test_every_pin_is_on_a_reference_checkpoint_and_states_its_validity():
    from bench.data.mini_checkpoints import MINI_CHECKPOINTS
    assert PINS
    for path in PINS:
        args = load_expectation(path).args
        assert "--ckpt" in args and args[args.index("--ckpt") + 1] in MINI_CHECKPOINTS, \
            f"{path.name}: pins belong on a trained reference checkpoint, not on random weights"
        v = _validity(path)
        assert {"random", "metric", "margin"} <= set(v) and v["margin"] > 0, f"{path.name}: no validity block"


@pytest.mark.slow
@pytest.mark.parametrize("path", PINS, ids=lambda p: p.stem)
def test_trained_scores_above_random(path, check_results):
    exp = load_expectation(path)
    v = _validity(path)
    if v.get("known_gap"):   # stated in the pin and in the closing note; shown by pytest -ra on every run
        pytest.xfail(f"{path.stem}: {v['known_gap']}")
    trained = run_expectation(exp, check_results)["metrics"][v["metric"]]
    twin = replace(exp, path=path.with_name(f"{path.stem}__random.yaml"),
                   args=random_twin_args(exp.args, v["random"]))
    rand = run_expectation(twin, check_results)["metrics"][v["metric"]]
    assert trained - rand >= v["margin"], (
        f"{path.stem}: trained {v['metric']} {trained:.2f} vs random {rand:.2f}: margin {trained - rand:.2f} "
        f"< {v['margin']}")


@pytest.mark.slow
def test_supervised_ranks_above_self_supervised_in_domain(check_results):
    """On the miniature ImageNet's own classes, the network trained with those labels beats the MoCo v2 one on
    k-NN (as supervised beats SSL pre-training in-domain at this scale), and both beat random init."""
    exp = load_expectation(EXPECTED / "knn.yaml")
    top1 = {}
    for name in ("mini_supervised_resnet18", "mini_mocov2_resnet18"):
        args = random_twin_args(exp.args, ["--ckpt", name])
        top1[name] = run_expectation(replace(exp, path=EXPECTED / f"knn__{name}.yaml", args=args),
                                     check_results)["metrics"]["top1"]
    assert top1["mini_supervised_resnet18"] > top1["mini_mocov2_resnet18"] + 2, top1


def test_random_twin_args():
    assert random_twin_args(("run", "--protocol", "knn", "--ckpt", "x", "--arch", "resnet18", "--seed", "0"),
                            ["--model", "resnet18"]) == ("run", "--protocol", "knn", "--seed", "0", "--model",
                                                         "resnet18")


@pytest.mark.slow     # trains a reference checkpoint on a fresh cache
def test_reference_checkpoints_are_written_in_their_publishers_layouts():
    """The files the pins run on are what the publishers' save code writes, and load like downloaded files."""
    import argparse

    import torch

    from bench.backbones import load_backbone
    from bench.backbones.zoo import load_registry
    from bench.data.mini_checkpoints import MINI_CHECKPOINTS, train_mini_checkpoints
    registry = load_registry()
    files = train_mini_checkpoints()
    assert set(files) == set(MINI_CHECKPOINTS)
    sup = torch.load(files["mini_supervised_resnet18"], weights_only=True)
    assert "fc.weight" in sup and not any(k.startswith("module.") for k in sup)          # torchvision: bare
    moco = torch.load(files["mini_mocov2_resnet18"], weights_only=True)
    assert set(moco) == {"epoch", "arch", "state_dict", "optimizer"}
    sd = moco["state_dict"]
    assert {"module.queue", "module.queue_ptr", "module.encoder_q.fc.0.weight", "module.encoder_q.fc.2.weight",
            "module.encoder_k.conv1.weight"} <= set(sd) and sd["module.queue"].shape == (128, 1024)
    mae = torch.load(files["mini_mae_vit_tiny16"], weights_only=False)
    assert {"model", "optimizer", "epoch", "args"} <= set(mae) and isinstance(mae["args"], argparse.Namespace)
    assert {"mask_token", "decoder_embed.weight", "decoder_pred.weight", "cls_token"} <= set(mae["model"])
    for name in MINI_CHECKPOINTS:
        bb = load_backbone(name)
        entry = registry[name]
        assert bb.report.coverage == 1.0 and not bb.report.missing and not bb.report.unexpected
        assert (bb.report.layout, bb.report.family, bb.report.arch) == (entry.layout, entry.family, entry.arch)


@pytest.mark.slow
def test_self_supervised_ranks_above_supervised_on_dense_prediction(check_results):
    """On the miniature ADE20K the MoCo v2 checkpoint beats the supervised one (MoCo's finding that contrastive
    pre-training transfers better to dense tasks than supervised; here the supervised features have learnt to
    discard the colour and position that the scene classes need)."""
    exp = load_expectation(EXPECTED / "segmentation.yaml")
    args = random_twin_args(exp.args, ["--ckpt", "mini_supervised_resnet18"])
    sup = run_expectation(replace(exp, path=EXPECTED / "segmentation__supervised.yaml", args=args),
                          check_results)["metrics"]["mIoU"]
    moco = run_expectation(exp, check_results)["metrics"]["mIoU"]
    assert moco > sup + 3, (moco, sup)


def test_reference_checkpoint_files_carry_the_recipe_version():
    """A stale file from an older recipe is never picked up: the registry's file names carry MINI_CKPT_VERSION."""
    from bench.backbones.zoo import MINI_SCHEME, load_registry
    from bench.data.mini_checkpoints import MINI_CHECKPOINTS, MINI_CKPT_VERSION
    minis = {n: e for n, e in load_registry().items() if e.url and e.url.startswith(MINI_SCHEME)}
    assert set(minis) == set(MINI_CHECKPOINTS)
    assert all(e.file == f"{n}-v{MINI_CKPT_VERSION}.pth" and e.url == MINI_SCHEME + n for n, e in minis.items())
