"""bench check: the project's expectations hold (this is how CI runs them), and an edit beyond tolerance fails."""
from pathlib import Path

import pytest
import yaml

from bench.sweep import plan_checkpoints
from conftest import run_cli

EXPECTED = Path(__file__).resolve().parent.parent / "results" / "expected"


PINS = sorted(EXPECTED.glob("*.yaml"))


def test_there_are_pins():
    assert PINS, "results/expected/ holds no expectation"


# one test per pin, so a failure names its protocol (and -k knn runs one)
@pytest.mark.slow
@pytest.mark.parametrize("pin", PINS, ids=[p.stem for p in PINS])
def test_project_expectation_holds(pin, check_results, capsys):
    assert run_cli("check", "--expected", pin, "--results", check_results) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "1/1 expectations hold" in out


def test_interrupt_stops_check_at_once(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside a pin's run (which bench's own main turns into exit 130) stops `bench check`: the next pin
    never starts and the exit status is 130."""
    import bench.commands.run
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text("args: [run, --protocol, knn]\nmetrics: {top1: 1}\ntolerance: 1\n")
    started = []

    def interrupted(args, extra):
        started.append(args.argv)
        raise KeyboardInterrupt
    monkeypatch.setattr(bench.commands.run, "run", interrupted)
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    assert run_cli("check", "--expected", tmp_path) == 130
    err = capsys.readouterr().err
    assert len(started) == 1 and "[1/2] a.yaml" in err and "[2/2]" not in err and "0/2 pins ran" in err


def _edited(tmp_path: Path, metric: str, delta: float) -> Path:
    data = yaml.safe_load((EXPECTED / "knn.yaml").read_text())
    data["metrics"][metric] = round(data["metrics"][metric] + delta, 2)
    path = tmp_path / "knn.yaml"            # same stem → reuses the record the first test ran
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow     # trains a reference checkpoint on a fresh cache
def test_edit_beyond_tolerance_fails_with_a_diff(check_results, tmp_path, capsys):
    tol = yaml.safe_load((EXPECTED / "knn.yaml").read_text())["tolerance"]
    assert run_cli("check", "--expected", _edited(tmp_path, "top1", 2 * tol), "--results", check_results) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("top1 "))
    assert "beyond tolerance" in line and f"{-2 * tol:+.2f}" in line
    assert "0/1 expectations hold" in out


@pytest.mark.slow     # trains a reference checkpoint on a fresh cache
def test_edit_within_tolerance_passes(check_results, tmp_path):
    tol = yaml.safe_load((EXPECTED / "knn.yaml").read_text())["tolerance"]
    assert run_cli("check", "--expected", _edited(tmp_path, "top5", tol / 2), "--results", check_results) == 0


@pytest.mark.slow     # trains a reference checkpoint on a fresh cache
def test_missing_metric_fails(check_results, tmp_path, capsys):
    data = yaml.safe_load((EXPECTED / "knn.yaml").read_text())
    data["metrics"]["no_such_metric"] = 1.0
    (tmp_path / "knn.yaml").write_text(yaml.safe_dump(data))
    assert run_cli("check", "--expected", tmp_path / "knn.yaml", "--results", check_results) == 1
    assert "missing from the record" in capsys.readouterr().out


@pytest.mark.parametrize("body,message", [("args: [run]\nmetrics: {top1: 1}\n", "needs 'args'"),
                                          ("args: [run, --out, x]\nmetrics: {top1: 1}\ntolerance: 1\n", "--out"),
                                          ("args: [run]\nmetrics: {top1: fast}\ntolerance: 1\n", "metrics.top1")])
def test_malformed_expectation_is_a_one_line_error(tmp_path, capsys, body, message):
    (tmp_path / "bad.yaml").write_text(body)
    assert run_cli("check", "--expected", tmp_path / "bad.yaml") == 2
    assert message in capsys.readouterr().err


def test_sweep_plan_lists_local_checkpoints_and_says_why_others_are_skipped(tmp_path, monkeypatch):
    (tmp_path / "here.pth").write_bytes(b"x")
    catalog = tmp_path / "checkpoints.yaml"
    catalog.write_text(yaml.safe_dump({"checkpoints": {
        "local": {"path": str(tmp_path / "here.pth"), "arch": "resnet50"},
        "by_url": {"url": "https://example.org/w/by_url.pth", "arch": "resnet50"},
        "no_arch": {"path": str(tmp_path / "here.pth")}}}))
    monkeypatch.setenv("BENCH_CHECKPOINTS_YAML", str(catalog))
    monkeypatch.setenv("BENCH_CHECKPOINTS", str(tmp_path / "ckpts"))
    plan = {name: (action, what) for action, name, what, _ in plan_checkpoints()}
    assert plan["local"] == ("run", str(tmp_path / "here.pth"))
    assert plan["by_url"][0] == "skip" and str(tmp_path / "ckpts" / "by_url.pth") in plan["by_url"][1]
    assert plan["no_arch"] == ("skip", "checkpoints.yaml gives no arch")
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "by_url.pth").write_bytes(b"x")
    plan = {name: (action, what) for action, name, what, _ in plan_checkpoints()}
    assert plan["by_url"] == ("run", str(tmp_path / "ckpts" / "by_url.pth"))
    # where `--ckpt NAME` caches a registry checkpoint is found too (bench.backbones.zoo's file name)
    from bench.backbones.zoo import cache_filename
    from bench.data import cache_dir
    cached = cache_dir() / "checkpoints" / cache_filename("no_file", "https://example.org/w/resnet50.pth")
    catalog.write_text(yaml.safe_dump({"checkpoints": [
        {"name": "no_file", "url": "https://example.org/w/resnet50.pth", "arch": "resnet50"}]}))
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"x")
    assert {n: (a, w) for a, n, w, _ in plan_checkpoints()}["no_file"] == ("run", str(cached))


@pytest.mark.parametrize("text, needle", [("checkpoints: [oops\n", "cannot read the checkpoint registry"),
                                          ("checkpoints:\n- name: a\n  arhc: resnet50\n", "unknown fields ['arhc']"),
                                          ("checkpoints: 3\n", "must be a list of entries")])
def test_bad_catalog_is_the_same_one_line_error_for_the_sweep_and_ckpt_name(text, needle, tmp_path, monkeypatch,
                                                                              capsys, mini_root):
    from bench.cli import main
    from bench.sweep import main as sweep_main
    catalog = tmp_path / "checkpoints.yaml"
    catalog.write_text(text)
    monkeypatch.setenv("BENCH_CHECKPOINTS_YAML", str(catalog))
    assert sweep_main() == 2
    swept = capsys.readouterr().err
    assert main(["run", "--protocol", "knn", "--ckpt", "a", "--data-root", str(mini_root), "--out",
                 str(tmp_path / "out")]) == 2
    ran = capsys.readouterr().err
    assert swept == ran and ran.count("\n") == 1 and ran.startswith(f"bench: error: {catalog}: ") and needle in ran
