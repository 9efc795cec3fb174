"""bench site: a static leaderboard site that regenerates byte for byte, needs nothing outside its folder, and
works in a real browser (headless Chromium driven by Selenium: open from disk, follow a link, sort, filter)."""
from __future__ import annotations

import csv
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.reference import reference_index, reference_table
from bench.site import write_site
from bench.tables import write_tables
from conftest import run_cli
from test_tables import _record, _write

VIT = "vit_small_patch16_224"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Synthetic records: a fair DINO ViT-S k-NN row above the paper, one far below it, a miniature one, a random
    ResNet-18, and a semisup pair; DINO named through a checkpoints.yaml."""
    root = tmp_path_factory.mktemp("site")
    catalog = root / "checkpoints.yaml"
    catalog.write_text("checkpoints:\n"
                       f"  dino_vits16:\n    file: dino_s16.pth\n    method: DINO\n    arch: {VIT}\n"
                       f"  dino_vits16_b:\n    file: dino_s16_b.pth\n    method: DINO\n    arch: {VIT}\n")
    res = root / "results"
    _write(res, [
        _record("knn", "dino", {"top1": 76.0, "top5": 90.0, "top1_k20": 76.0}, arch=VIT, name="dino_s16.pth", fp="1",
                headline=("top1", "top5")),
        _record("knn", "dino", {"top1": 60.0, "top5": 80.0}, arch=VIT, name="dino_s16_b.pth", fp="2",
                headline=("top1", "top5")),
        _record("knn", "dino", {"top1": 10.0, "top5": 20.0}, arch=VIT, name="dino_s16.pth", fp="3",
                reasons=("miniature data", "--quick")),
        _record("knn", "dino", {"top1": 5.0}, arch="resnet18", family="random", name="random", fp="4"),
        _record("semisup", "byol", {"top1": 55.0}, family="byol", name="byol.pth", fp="5",
                preset_settings={"label_fraction": 0.01}),
    ])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CHECKPOINTS_YAML", str(catalog))
        write_tables(res, plots=False)       # the CSVs are the independent view of the same rows
        assert run_cli("site", "--results", res) == 0
        yield res


def _dino_vits_knn_top1() -> float:
    return float(next(r["value"] for r in reference_table("dino_linear_knn")
                      if (r["method"], r["arch"], r["protocol"], r["metric"]) == ("DINO", "ViT-S", "knn", "top1")))


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [a[k] for k in ("href", "src") if k in a]
        if tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            if self._row:
                self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row:
            self._row[-1] += data


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_site_is_self_contained(results):
    site = results / "site"
    pages = sorted(site.glob("*.html"))
    assert (site / "index.html") in pages and (site / "knn__imagenet.html") in pages
    for page in pages + [site / "style.css", site / "site.js"]:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//|@import|url\(\s*["']?https?:""", text), page
        assert 'type="module"' not in text          # Chromium refuses module scripts on file://
    for page in pages:
        for ref in _parse(page).refs:
            assert (site / ref).is_file(), f"{page.name} links {ref}, which is not in the site"


def test_index_lists_every_leaderboard_with_counts(results):
    rows = _parse(results / "site" / "index.html").rows
    tables = sorted(p.stem for p in results.glob("*__*.csv") if p.stem != "transfer__12datasets")
    assert len(rows) == len(tables)
    for protocol, dataset, documented, measured in rows:
        csv_rows = _csv(results / f"{protocol}__{dataset}.csv")
        assert int(measured) == sum(r["source"] == "measured" for r in csv_rows), (protocol, dataset)
        assert int(documented) == sum(r["source"] != "measured" for r in csv_rows), (protocol, dataset)


def test_table_page_has_the_csv_rows_and_links_each_record(results):
    site = results / "site"
    page = _parse(site / "knn__imagenet.html")
    csv_rows = _csv(results / "knn__imagenet.csv")
    # the same rows in the same order, but for documented rows stating the number of an earlier row (same method
    # once citation marks are dropped, arch, preset, setting and values): folded into that row
    seen, expected = set(), []
    for r in csv_rows:
        values = tuple(v for k, v in r.items() if k not in ("source", "method", "arch", "checkpoint", "preset",
                                                            "setting", "delta", "record"))
        key = (re.sub(r"\s*\[\d+\]", "", r["method"]), r["arch"], r["preset"], r["setting"], values)
        if r["source"] != "measured" and key in seen:
            continue
        seen.add(key)
        expected.append([r["arch"]])
    assert [r[2:3] for r in page.rows] == expected
    runs = [ref for ref in page.refs if ref.startswith("runs/")]
    assert sorted(runs) == sorted(f"runs/{p.name}" for p in (results / "runs").glob("*.json")
                                  if '"knn"' in p.read_text())
    for ref in runs:
        assert (site / ref).read_bytes() == (results / ref).read_bytes()
    html = (site / "knn__imagenet.html").read_text()
    assert "plots/knn__imagenet.svg" in html and "plots/knn__imagenet__over_k.svg" in html
    paper = next(r["source_paper"] for r in reference_index() if r["file"] == "dino_linear_knn.csv")
    dino_rows = [r for r in page.rows if r[0].startswith("dino_linear_knn")]
    assert dino_rows and all(r[-1].startswith(paper) for r in dino_rows)   # the citation cell of each documented row


def test_regeneration_is_byte_identical(results, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CHECKPOINTS_YAML", str(results.parent / "checkpoints.yaml"))

    def snapshot(folder):
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    first = snapshot(results / "site")
    copy = tmp_path / "elsewhere"
    shutil.copytree(results / "runs", copy / "runs")
    (copy / "site").mkdir()
    (copy / "site" / ".bench-site").write_text("")        # a site bench wrote (its marker; issue 33 item 3) ...
    (copy / "site" / "stale.html").write_text("old")       # ... is replaced as a whole
    write_site(copy)
    assert snapshot(copy / "site") == first


# --- the real browser -------------------------------------------------------------------------------------------

def _browser() -> tuple[str, str] | None:
    for binary in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(binary)
        driver = shutil.which("chromedriver")
        if found and driver:
            return found, driver
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                                                 "'bench[test]')")
    found = _browser()
    if found is None:
        pytest.skip("no Chromium + chromedriver on PATH (Debian: apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _visible(driver) -> list[list[str]]:
    """The cell texts of the rows a reader sees (one round trip instead of one per cell)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#board tbody tr'))"
        ".filter(tr => tr.offsetParent !== null)"
        ".map(tr => Array.from(tr.cells).map(td => td.innerText.trim()));")


def test_in_chromium_link_sort_filter_and_deltas(results, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    driver = browser
    driver.get((results / "site" / "index.html").resolve().as_uri())
    assert driver.title == "bench leaderboards"
    driver.find_element(By.CSS_SELECTOR, 'a[href="knn__imagenet.html"]').click()
    assert driver.current_url.endswith("/knn__imagenet.html") and driver.title.startswith("knn · imagenet")

    page_rows = _parse(results / "site" / "knn__imagenet.html").rows    # the CSV's rows, documented ones folded
    header = [th.text.rstrip(" ▲▼") for th in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
    col = header.index("top1")
    assert len(_visible(driver)) == len(page_rows)

    # sort by top1: ascending numbers, empty cells last; a second click reverses the numbers
    button = driver.find_elements(By.CSS_SELECTOR, "#board thead th button")[col]
    button.click()
    values = [r[col] for r in _visible(driver)]
    numbers = sorted(float(r[col]) for r in page_rows if r[col])
    assert [float(v) for v in values[:len(numbers)]] == numbers and not any(values[len(numbers):])
    button.click()
    values = [r[col] for r in _visible(driver)]
    assert [float(v) for v in values[:len(numbers)]] == numbers[::-1]

    # filter to one arch: exactly the measured ViT rows stay, in the sorted order
    Select(driver.find_element(By.CSS_SELECTOR, 'select[data-filter="arch"]')).select_by_value(VIT)
    rows = _visible(driver)
    assert [r[header.index("arch")] for r in rows] == [VIT] * 3
    assert [r[col] for r in rows] == ["76.00", "60.00", "10.00"]
    assert driver.find_element(By.ID, "count").text == f"3 of {len(page_rows)} rows"

    # Δ cells: coloured by sign and size against the paper's number; the miniature row says why, on hover
    doc = _dino_vits_knn_top1()
    trs = [tr for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr") if tr.is_displayed()]
    for tr, top1 in zip(trs[:2], (76.0, 60.0)):
        delta = top1 - doc
        span = next(s for s in tr.find_elements(By.CSS_SELECTOR, "td.deltas .delta")
                    if s.get_attribute("title").endswith("vs dino_linear_knn"))
        assert span.text == f"top1 {delta:+.2f}"
        classes = span.get_attribute("class").split()
        assert ("pos" if delta > 0 else "neg") in classes
        assert ("s3" if abs(delta) >= 5 else "s2" if abs(delta) >= 1 else "s1") in classes
        assert "measured" in tr.get_attribute("class").split()
        colour = span.value_of_css_property("background-color")
        assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
    reason = trs[2].find_element(By.CSS_SELECTOR, "td.deltas .nc")
    assert reason.text == "not compared" and reason.get_attribute("title") == "not compared: miniature data; --quick"
    assert trs[2].find_elements(By.CSS_SELECTOR, "td.deltas .delta") == []
    assert "miniature" in trs[2].text

    shot = tmp_path / "knn__imagenet.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000

    # the record link opens that record's JSON
    trs[0].find_element(By.CSS_SELECTOR, "td.record a").click()
    assert '"fingerprint": "1000000000000000"' in driver.page_source


def test_method_names_are_canonical_and_a_number_two_papers_report_is_one_row(results):
    """"BYOL [23]" and "SimCLR (ours)" are listed as BYOL and SimCLR (as printed in the tooltip), "Ours" as the
    table's own method, and a number both DINO and iBOT print for the same method and arch is one row naming both
    papers."""
    text = (results / "site" / "knn__imagenet.html").read_text()
    rows = _parse(results / "site" / "knn__imagenet.html").rows
    methods = {r[1] for r in rows}
    assert not any(re.search(r"\[\d+\]|\(ours\)|^Ours", m, re.I) for m in methods), methods
    # DINO's and iBOT's tables both print SwAV RN50's k-NN top-1: the page has one such row citing both
    swav = [r for r in rows if r[1] == "SwAV" and r[2] == "RN50"]
    assert len(swav) == 1 and "dino_linear_knn" in swav[0][0] and "ibot_knn_linear" in swav[0][0], swav
    layers = _parse(results / "site" / "layers__imagenet.html").rows
    assert "InstDisc" in {r[1] for r in layers} and "Ours" not in {r[1] for r in layers}
    assert 'title="Ours"' in (results / "site" / "layers__imagenet.html").read_text()
    assert "BYOL [" not in "".join(r[1] for r in rows) and "title=" in text


def test_in_chromium_every_column_fits_1280_px(results, browser):
    """At a 1280-px window no leaderboard page scrolls sideways: every column header lies inside the window."""
    pages = sorted((results / "site").glob("*__*.html"))
    assert browser.execute_script("return window.innerWidth") <= 1280
    for page in pages:
        browser.get(page.resolve().as_uri())
        overflow = browser.execute_script(
            "const w = document.documentElement.clientWidth;"
            "return Array.from(document.querySelectorAll('#board thead th'))"
            ".filter(th => th.getBoundingClientRect().right > w + 0.5).map(th => th.innerText);")
        assert overflow == [], f"{page.name}: columns past the right edge: {overflow}"
