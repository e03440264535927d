"""What a new user sees first (issue 16, point 10): the funnel leads, long per-class tables are
collapsed, ties are not "best", histogram bars are shares, lineage parameters wrap, CJK
captions render, and any subset (select, import) gets its evaluations, galleries and lineage.
Visual points are checked in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.sql.select import select_sql
from curate.report import build_report, collect
from curate.report import plots
from curate.report.build import LONG_K, best_index
from curate.subset import append_subset_manifest, read_subset
from curate.subset_import import import_subset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


def _has_cjk_font() -> bool:
    fc = shutil.which("fc-list")
    return bool(fc and subprocess.run([fc, ":lang=ja"], capture_output=True, text=True).stdout.strip())


def dump_dom(page: Path, probe_js: str, tmp_path: Path, width: int = 1200) -> str:
    """Load a copy of ``page`` with ``probe_js`` run on load (it writes results into
    body[data-probe]) in headless Chromium; returns the probe's JSON text."""
    probe = tmp_path / f"probe-{page.stem}.html"
    script = ("<script>window.addEventListener('load', () => { const r = (() => {" + probe_js + "})();"
              "document.body.setAttribute('data-probe', JSON.stringify(r)); });</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
            "--disable-dev-shm-usage", "--virtual-time-budget=10000", f"--window-size={width},1000",
            "--dump-dom", probe.as_uri()]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', r.stdout)
    assert m, r.stdout[:500]
    import html

    return json.loads(html.unescape(m.group(1)))


def eval_json(path: Path, per_class: dict[str, float], top1: float) -> Path:
    """An evaluation file shaped like `curate eval` writes (zeroshot per-class recall included)."""
    path.write_text(json.dumps({"summary": {"imagenet/top1": top1},
                                "zeroshot": {"imagenet": {"top1": top1, "top5": 0.0, "n_classes": len(per_class),
                                                          "chance": 1 / len(per_class),
                                                          "mean_per_class_recall": float(np.mean(list(per_class.values()))),
                                                          "per_class_recall": per_class}},
                                "wall_s": 3.0}))
    return path


# ------------------------------------------------------------------ plain rules
def test_best_is_highlighted_only_when_unique_and_nontrivial():
    assert best_index([0.0, 0.0, 0.0], "zeroshot.x.top1") is None  # tied zeros
    assert best_index([0.5, 0.5, 0.1], "zeroshot.x.top1") is None  # a tie at the top
    assert best_index([0.50001, 0.50002], "recall") is None  # equal at the shown precision
    assert best_index([0.2, 0.0], "retrieval.x.image_to_text_R@1") == 0
    assert best_index([0.1, 0.3, None], "zeroshot.x.per_class_recall.dog") == 1
    assert best_index([0.1], "top1") is None  # one run: nothing to compare
    assert best_index([3.0, 9.0], "wall_s") is None and best_index([10, 1000], "zeroshot.x.n_classes") is None


def test_histogram_bars_are_shares_not_densities():
    rng = np.random.default_rng(0)
    clip = {"pool": rng.normal(0.3, 0.02, 5000), "curated": rng.normal(0.32, 0.015, 800)}
    dens, _ = np.histogram(clip["pool"], bins=40, density=True)
    assert dens.max() > 5  # what the old axis showed as "share"
    edges, heights = plots.bin_heights(clip, bins=40)
    assert len(edges) == 41 and set(heights) == {"pool", "curated"}
    for h in heights.values():
        assert h.sum() == pytest.approx(1.0) and h.max() <= 1.0
    _, counts = plots.bin_heights(clip, bins=40, share=False)
    assert counts["curated"].sum() == 800


def test_charts_draw_cjk_without_missing_glyphs():
    if not _has_cjk_font():
        pytest.skip("no CJK font installed (scripts/setup.sh installs fonts-noto-cjk)")
    assert any("CJK" in f for f in plots.font_families())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        src = plots.grouped_bars(["日本語", "中文", "한국어", "english"], {"pool": [0.1, 0.2, 0.3, 0.4]},
                                 "キャプションの言語 / 语言", "share of samples")
    assert src.startswith("data:image/png;base64,")


# ------------------------------------------------------------------ page layout (Chromium)
@needs_chromium
def test_funnel_leads_and_per_class_rows_are_collapsed(curated_pool, tmp_path):
    ds, _ = curated_pool
    classes = [f"class {i:04d}" for i in range(1000)]
    rng = np.random.default_rng(0)
    a = {c: (0.0 if i % 3 else float(round(rng.random(), 3))) for i, c in enumerate(classes)}
    b = {c: (0.0 if i % 3 else float(round(rng.random(), 3))) for i, c in enumerate(classes)}
    evals = {"curated": eval_json(tmp_path / "a.json", a, 0.30), "raw": eval_json(tmp_path / "b.json", b, 0.20)}
    out = build_report(ds, "curated", out=tmp_path / "r.html", evals=evals)
    page = out.read_text()
    order = [page.index(f"id={s}") for s in ("funnel", "evaluation", "distributions", "galleries", "lineage")]
    assert order == sorted(order)
    # tied zeros (two of three classes) are never highlighted; the unique best top1 is
    row = re.search(r"<tr><td class=l>zeroshot.imagenet.top1</td>(.*?)</tr>", page).group(1)
    assert row.count("class=win") == 1 and row.index("class=win") < row.index("0.2")
    assert not re.search(r"<tr><td class=l>zeroshot.imagenet.top5</td>[^\n]*class=win", page)
    for m in re.finditer(r"<tr><td class=l>(class \d{4})</td>(.*?)</tr>", page):
        if a[m.group(1)] == b[m.group(1)]:
            assert "class=win" not in m.group(2), m.group(1)
    r = dump_dom(out, """
      const top = id => document.getElementById(id).getBoundingClientRect().top + window.scrollY;
      const visibleRows = [...document.querySelectorAll('tr')].filter(tr => tr.checkVisibility()).length;
      return {funnel: top('funnel'), evaluation: top('evaluation'), summary: top('eval-summary'),
              perItem: document.querySelector('h3.per-item').getBoundingClientRect().top + window.scrollY,
              visibleRows, details: document.querySelectorAll('details:not([open])').length,
              allRows: document.querySelectorAll('tr').length};""", tmp_path)
    assert r["funnel"] < 300 and r["funnel"] < r["evaluation"] < r["summary"] < r["perItem"]
    assert r["allRows"] > 1000 and r["details"] == 1  # every class is in the page, behind one <details>
    assert r["visibleRows"] < 100  # top/bottom LONG_K classes, not a thousand rows
    assert LONG_K == 10 and "highest 10 and lowest 10" in page


@needs_chromium
def test_lineage_parameters_wrap_whole(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from toypool import make_downloaded_pool

    from curate.recipe import load_recipe, run_recipe

    ds = make_downloaded_pool(tmp_path / "pool")
    words = " ".join(f"'phrase{i:03d}'" for i in range(60))
    query = f"SELECT uid FROM samples WHERE text NOT IN ({', '.join(words.split())}) AND text NOT LIKE 'buy%'"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: longsql\ndataset: {ds.root}\nembedding_model: toy\noutput: curated\nstages:\n"
                      f"  - kind: sql\n    name: no-spam\n    query: \"{query}\"\n    reason: spam\n")
    run_recipe(load_recipe(recipe), engine="local", quiet=True)
    out = build_report(ds, "curated", out=tmp_path / "r.html")
    r = dump_dom(out, """
      const cell = document.querySelector('td.params');
      return {text: cell.textContent, cellRight: cell.getBoundingClientRect().right,
              width: window.innerWidth, scroll: document.documentElement.scrollWidth,
              lines: Math.round(cell.getBoundingClientRect().height / 16)};""", tmp_path, width=1000)
    assert "phrase059" in r["text"] and "NOT LIKE 'buy%'" in r["text"]  # nothing cut off
    assert r["scroll"] <= r["width"] and r["cellRight"] <= r["width"]  # wrapped, not overflowing
    assert r["lines"] >= 3


@needs_chromium
def test_cjk_captions_render_as_glyphs(tmp_path):
    if not _has_cjk_font():
        pytest.skip("no CJK font installed (scripts/setup.sh installs fonts-noto-cjk)")
    sys.path.insert(0, str(Path(__file__).parent))
    from toypool import make_downloaded_pool

    ds = make_downloaded_pool(tmp_path / "pool")
    s = ds.read("samples")
    cjk = ["赤い丸の写真", "蓝色的正方形", "緑の四角形です", "红色圆圈图片"]
    texts = [cjk[i % 4] if i % 7 else t for i, t in enumerate(s.column("text").to_pylist())]
    ds.write_table("samples", s.set_column(s.schema.get_field_index("text"), "text", pa.array(texts)), schema="samples")
    select_sql(ds, "SELECT uid FROM samples WHERE text NOT LIKE 'buy%'", "clean")
    out = build_report(ds, "clean", out=tmp_path / "r.html")
    assert "赤い丸の写真" in out.read_text() or "蓝色的正方形" in out.read_text()
    # Draw each character in the captions' own font on a canvas: with no CJK font every
    # character becomes the same empty box, so the pictures would all be equal.
    r = dump_dom(out, """
      const cap = [...document.querySelectorAll('.caption')].find(e => /[\\u3040-\\u9fff]/.test(e.textContent));
      const font = getComputedStyle(cap).fontSize + ' ' + getComputedStyle(cap).fontFamily;
      const chars = [...new Set([...cap.textContent].filter(c => /[\\u3040-\\u9fff]/.test(c)))].slice(0, 6);
      const pics = chars.map(c => { const cv = document.createElement('canvas'); cv.width = 40; cv.height = 40;
        const g = cv.getContext('2d'); g.font = font.replace(/^[0-9.]+px/, '32px'); g.fillText(c, 2, 34);
        return cv.toDataURL(); });
      return {chars: chars.join(''), distinct: new Set(pics).size, n: pics.length};""", tmp_path)
    assert r["n"] >= 4 and r["distinct"] == r["n"], r


# ------------------------------------------------------------------ subsets made without a recipe
def test_select_and_imported_subsets_get_evaluations_galleries_lineage(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from toypool import make_downloaded_pool

    ds = make_downloaded_pool(tmp_path / "pool")
    select_sql(ds, "SELECT uid FROM samples WHERE text LIKE '%red%'", "reds")
    (tmp_path / "run").mkdir()
    ev = eval_json(tmp_path / "run" / "model.eval.json", {"a": 0.5, "b": 0.25}, 0.375)
    # what `curate eval` records in the trained subset's manifest
    append_subset_manifest(ds, "reds", "evaluations", {"results": str(ev), "checkpoint": "model.pt", "seed": 0,
                                                       "summary": {"imagenet/top1": 0.375}}, replace_on="results")
    append_subset_manifest(ds, "reds", "evaluations", {"results": str(tmp_path / "gone.json"), "seed": 1})
    import_subset(ds, "reds-copy", ds.root / "subsets" / "reds" / "uids.parquet")

    data = collect(ds, "reds")
    assert data["made_by"] == "curate select --sql" and data["origin"]["params"]["sql"].startswith("SELECT uid")
    assert data["model"] == "toy" and data["distributions"]["clip_score"]["n"]["curated"] > 0  # the only embeddings
    reds = set(read_subset(ds, "reds"))
    d = ds.read("downloads", columns=["uid", "status"]).to_pylist()
    downloaded = {r["uid"] for r in d if r["status"] == "success"}
    kinds = {g["reason"]: g["count"] for g in data["galleries"][0]["groups"]}
    assert kinds == {"kept": len(reds), "not selected (of downloaded)": len(downloaded - reds)}
    assert all(it["text"].startswith("a red") for g in data["galleries"][0]["groups"] if g["reason"] == "kept"
               for it in g["items"])
    out = build_report(ds, "reds", out=tmp_path / "reds.html")
    page = out.read_text()
    assert "recipe input" not in page and "made by curate select --sql" in page
    assert "id=evaluation" in page and "reds seed 0" in page and "0.375" in page and "gone.json" in page
    assert "id=galleries" in page and "id=lineage" in page and "text LIKE &#39;%red%&#39;" in page

    data = collect(ds, "reds-copy")
    assert data["made_by"].startswith("curate select --from-file") and data["galleries"]
    page = build_report(ds, "reds-copy", out=tmp_path / "copy.html").read_text()
    assert "id=galleries" in page and "id=lineage" in page and "uids.parquet" in page
    assert read_subset(ds, "reds-copy") == read_subset(ds, "reds")

    # an empty subset still shows what it left out (its galleries section was dropped whole)
    select_sql(ds, "SELECT uid FROM samples WHERE false", "none", allow_unknown=True)
    data = collect(ds, "none")
    assert [g["reason"] for g in data["galleries"][0]["groups"]] == ["not selected (of downloaded)"]
    assert "id=galleries" in build_report(ds, "none", out=tmp_path / "none.html").read_text()


def test_stage_subset_gallery_comes_from_its_decisions(tmp_path):
    """A subset written by an embedding-space stage (no recipe) shows that stage's decisions."""
    from curate.embedding_space.jobs import run_near_dedup

    sys.path.insert(0, str(Path(__file__).parent))
    from toypool import make_downloaded_pool

    ds = make_downloaded_pool(tmp_path / "pool")
    res = run_near_dedup(ds, "toy", 0.5, run="nd")
    data = collect(ds, "nd")
    assert data["origin"]["kind"] != "unknown" and "recipe" not in data["made_by"]
    (g,) = data["galleries"]
    counts = {grp["reason"]: grp["count"] for grp in g["groups"]}
    assert counts == {k: v for k, v in res["counts"]["reasons"].items() if v}
    assert data["funnel"][-1]["reasons"] == {k: v for k, v in res["counts"]["reasons"].items() if k != "kept"}
    page = build_report(ds, "nd", out=tmp_path / "nd.html").read_text()
    assert "id=galleries" in page and "id=lineage" in page and "0.5" in page

    # the funnel's removals add up to the reasons, counted from the stage's own input: the whole
    # pool (not only the downloaded samples), or the subset a chained stage was restricted to
    from curate.report.build import _funnel_view
    from curate.subset import read_subset_array

    assert data["made_by"] == "curate dedup near"
    last = _funnel_view(data["funnel"])["rows"][-1]
    assert last["removed"] == sum(data["funnel"][-1]["reasons"].values()) == res["counts"]["input"] - last["count"]
    run_near_dedup(ds, "toy", 0.999, run="nd_all")  # keeps every downloaded sample
    chained = run_near_dedup(ds, "toy", 0.5, run="nd2", input_uids=read_subset_array(ds, "nd_all").slice(0, 30))
    data2 = collect(ds, "nd2")
    last2 = _funnel_view(data2["funnel"])["rows"][-1]
    assert data2["funnel"][-1]["input"] == chained["counts"]["input"] == 30
    assert data2["notes"] == []
    # its decisions table deleted: the galleries fall back to selected / not selected, and say why
    from curate.storage import remove_tree

    remove_tree(ds.table_dir("decisions/nd2"))
    gone = collect(ds, "nd2")
    assert gone["notes"] == ["decisions/nd2, which made this subset, is not in the dataset any more: the galleries "
                             "show the samples selected and not selected instead of its decisions per reason"]
    assert "decisions/nd2, which made this subset" in build_report(ds, "nd2", out=tmp_path / "gone.html").read_text()
    assert last2["removed"] == sum(data2["funnel"][-1]["reasons"].values()) == 30 - last2["count"] > 0
    assert "of its 30 input samples" in last2["name"]


def test_split_metrics_keeps_a_long_summary_and_moves_per_class_rows():
    from curate.report.build import split_metrics

    runs = {"a": {**{f"summary.task{i:02d}/top1": 0.1 for i in range(40)},
                  **{f"zeroshot.x.per_class_recall.c{i}": 0.5 for i in range(13)},
                  **{f"zeroshot.y.per_class_recall.c{i}": 0.5 for i in range(5)}, "wall_s": 1.0}}
    summary, long = split_metrics(runs)
    assert list(long) == ["zeroshot.x.per_class_recall"] and len(long["zeroshot.x.per_class_recall"]) == 13
    assert len(summary) == 40 + 5 + 1


def test_a_filter_subset_s_step_says_when_a_sample_counts_under_several_reasons(tmp_path):
    """A `curate filter` subset of several filters counts a sample every filter removed under
    each reason, so its reasons add up to more than it removed: the step's name says so."""
    from curate.engine import LocalExecutor
    from curate.report.collect import _funnel
    from curate.tables import Dataset

    (tmp_path / "ds").mkdir()
    ds = Dataset(tmp_path / "ds")
    overlap = {"kind": "filter", "reasons": {"image_too_small": 5, "low_clip_score": 4}, "input_count": 10}
    [step] = _funnel(LocalExecutor(), ds, "basic+clip_score", {}, overlap, 3)  # 7 removed, 9 reasons
    assert step["name"].endswith("; a sample removed by several filters counts under each reason")
    [step] = _funnel(LocalExecutor(), ds, "basic", {}, {**overlap, "reasons": {"image_too_small": 7}}, 3)
    assert "several filters" not in step["name"]


def test_evaluation_inputs_are_checked_and_counts_stay_counts(tmp_path, capsys):
    """A comparison of another shape, or with a metric that is not a number, is one line (it was
    a traceback); a name with $...$ is text, not a formula; n_images prints as 50,000, not 5e+04;
    a label given twice is refused (the last run replaced the first in silence); a dataset that
    does not exist says so."""
    import json

    from curate.cli import main
    from curate.errors import DatasetError
    from curate.report.build import _comparison_view
    from curate.report.collect import load_evals
    from curate.report.plots import grouped_bars

    e = tmp_path / "e.json"
    e.write_text(json.dumps({"imagenet": {"top1": 0.51234, "n_images": 50000}, "samples_seen": 12800000}))
    runs = load_evals({"a": e}, None)["runs"]
    assert runs["a"] == {"imagenet.top1": 0.51234, "imagenet.n_images": 50000, "samples_seen": 12800000}
    assert isinstance(runs["a"]["imagenet.n_images"], int)
    for body, where in (([1], "top level"), ({"arms": [{"name": "a", "runs": [{"metrics": {"top1": "0.5"}}]}]},
                                               "arms[0].runs[0].metrics.top1: '0.5' is not a number")):
        c = tmp_path / "c.json"
        c.write_text(json.dumps(body))
        with pytest.raises(DatasetError, match=rf"c.json: not a comparison \({re.escape(where)}"):
            load_evals({}, c)
    math = {"arms": [{"name": n, "runs": [{"metrics": {"$\\foo$ recall": v}}]} for n, v in (("a", 0.5), ("b", 0.4))]}
    view = _comparison_view(math)
    assert view["rows"][0]["name"] == "$\\foo$ recall"
    assert grouped_bars(["$\\foo$ recall"], {"a": [0.5], "b": [0.4]}, "t", "y").startswith("data:image/png")
    for argv in (["report", str(tmp_path / "ds"), "--eval", f"a={e}", "--eval", f"a={e}"],
                 ["report", str(tmp_path / "nowhere"), "-s", "x"]):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "label 'a' given twice" in err and f"dataset folder {tmp_path / 'nowhere'} does not exist" in err
