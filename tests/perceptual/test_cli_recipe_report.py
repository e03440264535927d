"""`curate dedup perceptual`, `curate stages`, the perceptual_dedup recipe stage and the
report's group gallery, on the real downloaded copies dataset."""

from __future__ import annotations

import textwrap

import pytest

from curate.cli import main
from curate.perceptual.job import REASON
from curate.subset import read_subset

from .conftest import COPIED, N_DISTINCT


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_runs_and_checks_arguments(copies_ds, capsys):
    ds, truth = copies_ds
    root = str(ds.root)
    code, out, _ = _run(["dedup", "perceptual", root, "--radius", "10", "--engine", "local", "--output", "pd"], capsys)
    assert code == 0, out
    assert f"kept {N_DISTINCT} of {len(truth)}" in out and f"{REASON}={3 * len(COPIED)}" in out
    assert len(read_subset(ds, "pd")) == N_DISTINCT
    code, _, err = _run(["dedup", "perceptual", root, "--hash", "ahash", "--engine", "local"], capsys)
    assert code == 2 and "--hash must be one of" in err
    code, _, err = _run(["dedup", "perceptual", root, "--radius", "30", "--bands", "2", "--engine", "local"], capsys)
    assert code == 2 and "probes per band" in err
    code, out, _ = _run(["stages"], capsys)
    assert code == 0 and "perceptual_dedup" in out


def test_recipe_stage_and_report_gallery(copies_ds, tmp_path):
    from curate.recipe import load_recipe, run_recipe
    from curate.report.build import build_report, collect

    ds, truth = copies_ds
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: pd
        dataset: {ds.root}
        input: downloaded
        output: curated
        stages:
          - kind: exact_dedup
          - kind: perceptual_dedup
            radius: 10
        """))
    lineage = run_recipe(load_recipe(path), engine="local", quiet=True)
    stage = lineage["stages"][-1]
    assert stage["kind"] == "perceptual_dedup" and stage["output_count"] == N_DISTINCT
    assert stage["reasons"].get(REASON) == 3 * len(COPIED)
    assert len(read_subset(ds, "curated")) == N_DISTINCT
    data = collect(ds, "curated")
    groups = data["perceptual_groups"]
    assert len(groups) == len(COPIED)
    for g in groups:
        members = {g["survivor"]["uid"], *(it["uid"] for it in g["removed"])}
        assert len({truth[u] for u in members}) == 1 and g["size"] == 4
        assert g["survivor"]["thumb"].startswith("data:image/jpeg") and all(it["thumb"] for it in g["removed"])
    html = build_report(ds, "curated").read_text()
    assert "Perceptual duplicate groups" in html and html.count("removed, distance") == 3 * len(COPIED)
