"""Issue 16, point 1 in the report: the embedding-space guards' warnings are shown where a new
user looks first, above the funnel, and are readable (checked in headless Chromium); a report
with nothing to warn about has no Warnings section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toypool import make_downloaded_pool, run_two_stage_recipe  # noqa: E402

_spec = importlib.util.spec_from_file_location("_report_layout", Path(__file__).parent / "test_report_layout.py")
_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_layout)
dump_dom, needs_chromium = _layout.dump_dom, _layout.needs_chromium


@needs_chromium
def test_warnings_show_above_the_funnel_on_the_first_screen(tmp_path):
    from curate.recipe import load_recipe, run_recipe
    from curate.report import build_report

    ds = make_downloaded_pool(tmp_path / "pool")
    recipe = tmp_path / "r.yaml"
    # k=20 on 60 samples: "too large" (fewer than ~20 points a cluster); the guards say so
    recipe.write_text(f"name: g\ndataset: {ds.root}\nembedding_model: toy\noutput: g\n"
                      "stages:\n  - kind: cluster\n    k: 20\n")
    lineage = run_recipe(load_recipe(recipe), engine="local", quiet=True)
    warnings = lineage["stages"][0]["stats"]["warnings"]
    assert warnings
    out = build_report(ds, "g", out=tmp_path / "g.html")
    r = dump_dom(out, """
      const box = id => { const e = document.getElementById(id); if (!e) return null;
        const b = e.getBoundingClientRect(); return {top: b.top + window.scrollY, height: b.height,
          visible: e.checkVisibility(), text: e.innerText,
          // the heading carries the id; its list follows it
          list: e.nextElementSibling ? e.nextElementSibling.innerText : "",
          listVisible: !!e.nextElementSibling && e.nextElementSibling.checkVisibility(),
          listTop: e.nextElementSibling ? e.nextElementSibling.getBoundingClientRect().top + window.scrollY : 0}; };
      return {warnings: box('warnings'), funnel: box('funnel'), viewport: window.innerHeight};""", tmp_path)
    w, funnel = r["warnings"], r["funnel"]
    assert w is not None and w["visible"] and w["height"] > 10
    assert w["top"] < funnel["top"] and w["top"] < r["viewport"]  # on the first screen, before the funnel
    assert w["text"].strip() == "Warnings" and w["listVisible"] and w["listTop"] < funnel["top"]
    text = " ".join(w["list"].split())
    assert "cluster" in text and "k=20 is too large" in text
    for message in warnings:
        assert " ".join(message.split())[:60] in text

    # a recipe the guards have nothing to say about: no Warnings section at all
    plain = make_downloaded_pool(tmp_path / "plain")
    (tmp_path / "p").mkdir()
    run_two_stage_recipe(tmp_path / "p", plain)
    page = build_report(plain, "curated", out=tmp_path / "p.html")
    r = dump_dom(page, "return {warnings: !!document.getElementById('warnings'),"
                       " funnel: !!document.getElementById('funnel')};", tmp_path)
    assert r == {"warnings": False, "funnel": True}
