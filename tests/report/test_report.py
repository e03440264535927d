"""The HTML report: collected numbers match the run; the page renders in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from curate.report import build_report, collect


def test_collect_matches_the_run(curated_pool):
    ds, lineage = curated_pool
    data = collect(ds, "curated")
    names = [s["name"] for s in data["funnel"]]
    assert names == ["pool (ingested samples)", "downloaded", "no-spam (sql)", "clip (sql)"]
    counts = [s["count"] for s in data["funnel"]]
    assert counts[0] == 60 and counts[1] == 54 and counts[-1] == lineage["output_count"]
    assert data["funnel"][1]["reasons"] == {"http_404": 6}
    assert data["funnel"][2]["reasons"] == {"spam": lineage["stages"][0]["reasons"]["spam"]}
    clip = data["distributions"]["clip_score"]
    assert clip["n"]["curated"] == clip["counts"]["curated"].sum() == lineage["output_count"]
    words = data["distributions"]["caption_words"]
    assert words["n"]["pool"] == words["counts"]["pool"].sum() == 54
    # the engine's bins are numpy's histogram of the whole columns (the rule of plots.bin_heights)
    from curate.report import plots
    from curate.subset import read_subset

    emb = ds.read("embeddings/toy", columns=["uid", "clip_score"]).to_pydict()
    score = dict(zip(emb["uid"], emb["clip_score"]))
    dl = ds.read("downloads", columns=["uid", "status"]).to_pydict()
    pool = [score[u] for u, s in zip(dl["uid"], dl["status"]) if s == "success"]
    curated = [score[u] for u in read_subset(ds, "curated")]
    edges, heights = plots.bin_heights({"pool": pool, "curated": curated}, bins=40, share=False)
    assert np.array_equal(clip["edges"], edges)
    assert all(np.array_equal(clip["counts"][k], heights[k]) for k in heights)
    gal = {g["stage"]: g for g in data["galleries"]}
    spam = [grp for grp in gal["no-spam"]["groups"] if grp["reason"] == "spam"][0]
    assert all(it["text"].startswith("buy") and it["thumb"].startswith("data:image/jpeg;base64,") for it in spam["items"])
    low = [grp for grp in gal["clip"]["groups"] if grp["reason"] == "kept"][0]
    assert all(it["value"] > -0.3 for it in low["items"])


def test_report_is_self_contained(curated_pool, tmp_path):
    ds, _ = curated_pool
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"zeroshot": {"top1": 0.41, "mean_per_class_recall": 0.39}, "retrieval": {"image_r@1": 0.1}}))
    comp = tmp_path / "comparison.json"
    comp.write_text(json.dumps({"title": "tiny baselines", "metrics": ["top1"], "samples_seen": 1000,
                                "arms": [{"name": "raw", "size": 54, "runs": [{"seed": s, "metrics": {"top1": 0.2 + s / 100}} for s in range(3)]},
                                         {"name": "curated", "size": 40, "runs": [{"seed": s, "metrics": {"top1": 0.3 + s / 100}} for s in range(3)]}]}))
    out = build_report(ds, "curated", out=tmp_path / "r.html", evals={"curated-seed0": ev}, comparison=comp)
    page = out.read_text()
    assert "<!doctype html>" in page and "Funnel" in page and "low_clip_score" in page
    assert "0.310 ± 0.010" in page and "mean_per_class_recall" in page  # mean, sample std over seeds; flattened eval
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) >= 5 and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"<(link|script)[^>]+(href|src)=", page)  # nothing fetched from outside


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-ok', ok);
  document.body.setAttribute('data-h2', document.querySelectorAll('h2').length);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(curated_pool, tmp_path):
    ds, _ = curated_pool
    out = build_report(ds, "curated", out=tmp_path / "r.html")
    # the check script goes into a copy: the report itself carries no scripts
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", CHECK + "</body>"))
    profile = tmp_path / "chrome-profile"
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            "--disable-dev-shm-usage", "--virtual-time-budget=10000"]
    r = subprocess.run(args + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-images="(\d+)" data-images-ok="(\d+)" data-h2="(\d+)"', r.stdout)
    assert m, r.stdout[:500]
    total, ok, h2 = map(int, m.groups())
    assert total >= 5 and ok == total and h2 >= 3
    shot = tmp_path / "shot.png"
    r = subprocess.run(args + [f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.stat().st_size > 10_000


def test_cli_defaults_to_the_latest_recipe_output(curated_pool, tmp_path):
    import sys

    ds, _ = curated_pool
    out = tmp_path / "cli.html"
    r = subprocess.run([sys.executable, "-m", "curate.cli", "report", str(ds.root), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "subset <b>curated</b>" in out.read_text()


def test_a_dataset_without_subsets_says_how_to_make_one(tmp_path):
    """It said 'say which subset to report on (--subset); have: none': a choice among none."""
    from curate.errors import DatasetError
    from curate.report.collect import default_subset
    from curate.tables import Dataset

    ds = Dataset(tmp_path / "ds")
    ds.runs_dir().mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no subset to report on yet; make one first \(curate run"):
        default_subset(ds)


def test_an_out_path_that_is_a_folder_is_refused_before_the_report_is_built(tmp_path, capsys):
    """It failed writing the page ('Is a directory'), after every count and thumbnail was made."""
    from curate.cli import main

    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "ds"), "-o", str(tmp_path / "out"), "--engine", "local"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--out {tmp_path / 'out'} is a folder; give the file's path" in err, err
