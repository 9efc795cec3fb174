"""The README's "try it" block runs as written, top to bottom, on the miniatures; every page it links exists."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _try_it_block() -> list[str]:
    after = README.split("Try it as it is", 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, re.S)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


@pytest.mark.slow     # trains the reference checkpoints on a fresh cache
def test_try_it_block_runs_as_written(tmp_path):
    commands = _try_it_block()
    assert commands[0].startswith("bench run") and any(c.startswith("bench table") for c in commands)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}   # BENCH_CACHE: the session's (conftest), miniatures included
    for cmd in commands:
        argv = shlex.split(cmd)
        assert argv[0] == "bench", cmd
        r = subprocess.run([sys.executable, "-m", "bench", *argv[1:]], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
    table = (tmp_path / "results" / "knn__imagenet.md").read_text()
    assert "mini_mocov2_resnet18" in table and "random" in table


def test_linked_pages_exist():
    for link in re.findall(r"\]\(((?:docs|results)/[^)#]+)\)", README):
        assert (ROOT / link).exists(), link
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(((?:\.\./)?[\w./-]+\.(?:md|py|yaml))\)", page.read_text()):
            assert (page.parent / link).resolve().exists(), f"{page.name}: {link}"


def test_command_blocks_use_no_pipe_as_alternatives():
    # `bench list protocols | presets` is a shell pipeline (issue 19); a `|` in a bench command line must feed a
    # real filter
    filters = {"head", "tail", "grep", "less", "tee", "sort", "column", "jq", "wc", "xargs", "cut"}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                code = line.split("#", 1)[0]
                if re.search(r"\bbench\b", code):
                    for after in re.findall(r"(?<!\|)\|(?!\|)\s*([\w.-]+)", code):
                        assert after in filters, f"{page.name}: {line.strip()}"


def test_in_the_repository_runs_and_tables_leave_the_committed_results_alone(mini_root, tmp_path, monkeypatch):
    """A folder whose results/ holds regenerate.py is bench's checkout: `bench run` and `bench table` write to
    results/local/ (git-ignored), nothing else under results/ changes, and `bench table --check` reads results/."""
    from conftest import run_cli
    committed = tmp_path / "results"
    committed.mkdir()
    (committed / "regenerate.py").write_text("# the committed leaderboard's own command\n")
    (committed / "index.md").write_text("committed\n")
    before = {p: p.read_bytes() for p in committed.rglob("*")}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_RESULTS", raising=False)
    assert run_cli("run", "--protocol", "knn", "--model", "test_resnet", "--resolution", "32", "--data-root",
                   mini_root) == 0
    assert run_cli("table", "--no-plots") == 0
    assert len(list((committed / "local" / "runs").glob("*.json"))) == 1
    assert (committed / "local" / "index.md").is_file()
    assert {p: p.read_bytes() for p in committed.rglob("*") if "local" not in p.relative_to(committed).parts} \
        == before
    assert "/results/local/" in (ROOT / ".gitignore").read_text().splitlines()
    from bench._results_dir import default_results
    assert default_results(committed=True) == Path("results")
