"""The whole demo at a tiny scale: every step runs and the outputs agree with each other.

The tiny scale trains for a handful of steps, so model quality is not asserted here (the
margins are reported by `curate demo` at its default scale); what is asserted is that every
step ran, the subsets are what they claim, curation removed the noise the recipe targets,
and the report renders the comparison.
"""

from __future__ import annotations

import json

import pytest

from curate.subset import read_subset


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_demo_end_to_end_tiny(tmp_path, engine):
    """`make demo` runs on Spark local mode; the default suite runs the same steps in-process
    (every job's Spark output equals the in-process one: tests/engine, tests/spine, ...)."""
    from curate.demo.run import SCALES, DemoConfig, run_demo

    master = "local[2]" if engine == "spark" else None
    cfg = DemoConfig(workdir=tmp_path / "demo", seeds=(0,), engine=engine, master=master, **SCALES["tiny"])
    summary = run_demo(cfg)
    wd = tmp_path / "demo"
    comp = json.loads((wd / "comparison.json").read_text())
    arms = {a["name"]: a for a in comp["arms"]}
    assert set(arms) == {"raw", "random", "curated"}
    assert all(len(a["runs"]) == 1 and "zeroshot_top1" in a["runs"][0]["metrics"] for a in arms.values())
    for a in arms.values():  # equal compute: every model saw the same number of samples
        info = json.loads((wd / "runs" / f"{a['name']}-seed0" / "train.json").read_text())
        assert info["samples_seen"] == cfg.samples_seen
    from curate.tables import Dataset

    ds = Dataset(wd / "dataset")
    raw, rnd, cur = (read_subset(ds, n) for n in ("raw", "random", "curated"))
    assert len(rnd) == len(cur) == arms["curated"]["size"] and set(rnd) <= set(raw) and set(cur) <= set(raw)
    assert len(cur) < len(raw)
    # the recipe's filters remove what they target, whatever the (barely trained) scorer does
    q = summary["curation_quality"]
    for kind in ("non_english", "tiny", "extreme_aspect"):
        assert q["curated"]["share"].get(kind, 0) == 0, (kind, q)
    assert q["raw"]["share"].get("non_english", 0) > 0
    d = ds.read("downloads", columns=["uid", "sha256"]).to_pylist()
    sha = {r["uid"]: r["sha256"] for r in d}
    assert len({sha[u] for u in cur}) == len(cur)  # exact duplicates: one copy left
    assert len({sha[u] for u in raw}) < len(raw)
    # the perceptual stage ran on what exact dedup left, measured against the truth's sources
    assert q["perceptual"]["input"] > 0 and "redundant_copies" in q["raw"] and "redundant_copies" in q["curated"]
    assert q["curated"]["near_duplicate_copies"] <= q["curated"]["redundant_copies"]
    p = q["perceptual"]  # the demo recipe's pHash radius finds the web-style copies, loses no picture
    assert p["redundant_in_input"] > 0 and p["recall"] >= 0.75 and p["distinct_pictures_lost"] <= 1, p
    funnel = summary["recipe_funnel"]
    assert funnel[0][1] == len(raw) and funnel[-1][2] == len(cur)
    page = (wd / "report.html").read_text()
    assert "Tiny CLIP baselines" in page and "curated − raw" in page and "Funnel" in page
    assert set(summary["timings_s"]) >= {"generate", "ingest", "download", "train DFN", "embed", "recipe", "report"}


def test_summary_lines_are_sentences_not_python_dicts(capsys):
    """The demo's closing summary reads as lines: wins per baseline out of the seeds, the
    perceptual stage's precision and recall, no Python dict or None."""
    from curate.demo.summary import print_summary

    runs = [{"metrics": {"zeroshot_top1": 0.5}}, {"metrics": {"zeroshot_top1": 0.4}}]
    comparison = {"title": "Tiny CLIP baselines", "metrics": ["zeroshot_top1"],
                  "arms": [{"name": a, "size": 10, "runs": runs} for a in ("raw", "random", "curated")],
                  "margins": {"raw": {"zeroshot_top1": 0.0}, "random": {"zeroshot_top1": 0.0}},
                  "seed_wins_zeroshot_top1": {"raw": 1, "random": 0}}
    quality = {"raw": {"share": {"clean": 0.5, "tiny": 0.5}, "redundant_copies": 0.2, "near_duplicate_copies": 0.1},
               "curated": {"share": {"clean": 1.0}, "redundant_copies": 0.0, "near_duplicate_copies": 0.0},
               "perceptual": {"table": "decisions/recipe-x-perceptual_dedup", "input": 40, "removed": 4,
                              "true_removals": 4, "precision": 1.0, "redundant_in_input": 5, "recall": 0.8,
                              "distinct_pictures_lost": 0, "distinct_lost_share": 0.0}}
    print_summary(comparison, {"curation_quality": quality, "report": "r.html", "total_s": 3.0})
    err = capsys.readouterr().err
    assert "{" not in err and "None" not in err, err
    assert "seeds where curated beats (zero-shot top-1): raw 1 of 2, random 0 of 2" in err
    assert "removed 4 of 40, 4 true copies (precision 100.0%, recall 80.0% of 5 redundant)" in err
    quality["perceptual"].update(removed=0, true_removals=0, precision=None)
    print_summary(comparison, {"curation_quality": quality, "report": "r.html", "total_s": 3.0})
    assert "precision n/a" in capsys.readouterr().err
