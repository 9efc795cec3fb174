"""bench cite: every preset resolves to the BibTeX of the paper it follows; entries are well-formed."""
from __future__ import annotations

import re

import pytest
import yaml

from bench.presets import presets_dir
from bench.reference.cite import cite_paper, citations


def _presets():
    for path in sorted(presets_dir().glob("*.yaml")):
        for name, body in yaml.safe_load(path.read_text())["presets"].items():
            yield path.stem, name, str((body or {}).get("paper", ""))


@pytest.mark.parametrize("protocol,preset,paper", list(_presets()), ids=lambda v: str(v)[:40])
def test_every_preset_cites_its_paper(protocol, preset, paper):
    assert paper, f"{protocol}/{preset} names no paper"
    assert cite_paper(paper), f"{protocol}/{preset}: no citations.yaml entry matches {paper!r}"


def test_entries_are_bibtex_with_their_key():
    for key, e in citations().items():
        head = re.match(r"@(\w+)\{(\w+),", e["bibtex"])
        assert head and head[1] in ("inproceedings", "article", "misc", "software"), key
        assert e["bibtex"].count("{") == e["bibtex"].count("}"), key
        assert all(f in e["bibtex"] for f in ("title", "author", "year")), key


def test_matching_tells_related_papers_apart():
    assert cite_paper("Chen et al. 2020, Big Self-Supervised Models are Strong Semi-Supervised Learners (SimCLR v2)") \
        == ["simclrv2"]
    assert cite_paper("Oquab et al. 2023, DINOv2: Learning Robust Visual Features") == ["dinov2"]
    assert cite_paper("Chen et al. 2020, Improved Baselines with Momentum Contrastive Learning (MoCo v2); "
                      "He et al. 2020 (MoCo)") == ["moco", "mocov2"]


def test_cli_prints_each_entry_once(capsys):
    from bench.cli import main
    assert main(["cite", "--preset", "mae"]) == 0
    out = capsys.readouterr().out
    assert out.count("@inproceedings{he2022mae,") == 1 and "% finetune/mae:" in out and "% linear/mae:" in out
    assert main(["cite", "--preset", "nonesuch"]) == 2
    assert main(["cite"]) == 0 and "@software{bench," in capsys.readouterr().out
