"""The coverage recipe stage and the report's coverage section (HTML content, and the page
rendered in headless Chromium like tests/report does)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curate.report import build_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from toypool import make_downloaded_pool  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture
def staged_pool(tmp_path):
    """The report tests' toy pool ("a red circle"... and spam), a recipe that drops every
    red caption, then a coverage stage over what is left."""
    from curate.recipe import load_recipe, run_recipe

    ds = make_downloaded_pool(tmp_path / "pool")
    (tmp_path / "shapes.txt").write_text("red\ngreen\nblue\ncircle\nsquare\nwatches\nzebra\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: cov\ndataset: {ds.root}\nembedding_model: toy\noutput: curated\nstages:\n"
        "  - kind: sql\n    name: no-red\n    query: SELECT uid FROM samples WHERE text NOT LIKE '%red%'\n"
        "    reason: red\n"
        f"  - kind: coverage\n    concepts: {tmp_path / 'shapes.txt'}\n    min_pool_count: 5\n")
    return ds, run_recipe(load_recipe(recipe), engine="local", quiet=True)


def test_recipe_stage_keeps_everything_and_counts_the_selection(staged_pool):
    ds, lineage = staged_pool
    stage = lineage["stages"][-1]
    assert stage["kind"] == "coverage" and stage["input_count"] == stage["output_count"] == 39
    assert stage["reasons"] == {"kept": 39}
    assert stage["stats"]["table"] == "coverage/recipe-cov-coverage" and stage["stats"]["label"] == "curated"
    rows = {r["concept"]: r for r in ds.read("coverage/recipe-cov-coverage").to_pylist()}
    assert rows["red"]["count"] == 0 and rows["red"]["pool_count"] == 15 and rows["red"]["relative_drop"] == 1.0
    assert rows["circle"]["pool_size"] == 54 and rows["circle"]["subset_size"] == 39  # pool = downloaded
    assert stage["stats"]["caption"]["starved"][0] == "red"
    # cached on a rerun: the table stays
    from curate.recipe import load_recipe, run_recipe

    again = run_recipe(load_recipe(Path(lineage["recipe_file"])), engine="local", quiet=True)
    assert again["stages"][-1]["cached"] and ds.has_table("coverage/recipe-cov-coverage")


def test_report_section(staged_pool, tmp_path):
    ds, _ = staged_pool
    page = build_report(ds, "curated", out=tmp_path / "r.html").read_text()
    start, end = page.index("<h2 id=coverage>"), page.index("<h2 id=galleries>")
    sec = page[start:end]
    assert "table coverage/recipe-cov-coverage (SQL view <code>coverage_recipe-cov-coverage</code>)" in sec
    assert "7 concepts (file: " in sec and "pool = downloaded samples" in sec
    assert "<td class=l>caption</td><td>54</td><td>6</td><td>39</td><td>5</td><td>1</td>" in sec
    assert "Concepts starved by curated (caption)" in sec
    starved = re.findall(r"<tr><td class=l>([a-z]+)</td><td>(\d+)</td><td>(\d+)</td><td>[\d.]+%</td>"
                         r"<td>([+-][\d.]+)</td></tr>", sec)
    assert starved[0] == ("red", "15", "0", "+1.000")
    assert all(float(d) > 0 for *_, d in starved)
    assert "alt='concept long tail' src='data:image/png;base64," in sec
    # no coverage table, no section
    shutil.rmtree(ds.table_dir("coverage"))
    assert "id=coverage" not in build_report(ds, "curated", out=tmp_path / "r2.html").read_text()


CHECK = """<script>
window.addEventListener('load', () => {
  const sec = document.getElementById('coverage');
  const imgs = [...document.images].filter(i => i.alt.includes('concept'));
  document.body.setAttribute('data-cov', sec ? 'yes' : 'no');
  document.body.setAttribute('data-cov-images', imgs.length);
  document.body.setAttribute('data-cov-ok', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_section_renders_in_headless_chromium(staged_pool, tmp_path):
    ds, _ = staged_pool
    out = build_report(ds, "curated", out=tmp_path / "r.html")
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", CHECK + "</body>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome-profile'}", "--disable-dev-shm-usage", "--virtual-time-budget=10000"]
    r = subprocess.run(args + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-cov="(\w+)" data-cov-images="(\d+)" data-cov-ok="(\d+)"', r.stdout)
    assert m, r.stdout[:500]
    assert m.group(1) == "yes" and int(m.group(2)) >= 1 and m.group(2) == m.group(3)


def test_recipe_stage_by_image_with_the_recipe_model(tmp_path):
    """`threshold:` counts by image too, with the recipe's embedding_model and its prompts."""
    import pyarrow.compute as pc

    from curate.recipe import load_recipe, run_recipe

    from .conftest import write_tiny_embeddings

    ds = make_downloaded_pool(tmp_path / "pool")
    d = ds.read("downloads", columns=["uid", "status"])
    ok = sorted(d.filter(pc.equal(d["status"], "success")).column("uid").to_pylist())
    model = write_tiny_embeddings(ds, ok[:40])
    (tmp_path / "shapes.txt").write_text("red\ncircle\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: img\ndataset: {ds.root}\nembedding_model: {model}\noutput: sel\nstages:\n"
        "  - kind: sample\n    fraction: 0.5\n    seed: 1\n"
        f"  - kind: coverage\n    concepts: {tmp_path / 'shapes.txt'}\n    threshold: 0.0\n    label: half\n"
        "    table: by-image\n")
    lineage = run_recipe(load_recipe(recipe), engine="local", quiet=True)
    rows = ds.read("coverage/by-image").to_pylist()
    img = [r for r in rows if r["source"] == "image"]
    assert {r["subset"] for r in rows} == {"half"} and len(img) == 2
    assert img[0]["pool_size"] == 40 and 0 < img[0]["subset_size"] < 40
    assert lineage["stages"][-1]["stats"]["image"]["pool_size"] == 40
