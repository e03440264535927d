"""The CLI commands end to end (in-process executor), their outputs through `curate sql`,
and one-line errors for user mistakes."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from curate.sql import query
from curate.subset import read_subset
from curate.tables import Dataset

from .helpers import clustered_embeddings, write_embeddings


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_chain_and_sql(tmp_path, capsys):
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", clustered_embeddings(n=800, d=16, centers=4, seed=5), rows_per_shard=300)
    root = str(ds.root)
    code, out, _ = _run(["cluster", root, "-k", "5", "--engine", "local", "--name", "km"], capsys)
    assert code == 0 and "800 samples in 5 clusters" in out
    code, out, _ = _run(["dedup", "semantic", root, "--eps", "0.02", "-c", "km", "--engine", "local"], capsys)
    assert code == 0 and "semdedup: kept" in out
    code, out, _ = _run(["prune", "dbp", root, "--keep-fraction", "0.4", "-c", "km", "--subset", "semdedup",
                         "--engine", "local", "--output", "pruned"], capsys)
    assert code == 0 and "-> subsets/pruned, decisions/dbp" in out  # the subset it wrote, not its run's name
    sd = read_subset(ds, "semdedup")
    pruned = read_subset(ds, "pruned")
    assert len(pruned) == int(len(sd) * 0.4) and set(pruned) <= set(sd)
    t = query(ds, "SELECT sum(quota) AS q, sum(kept) AS k, sum(size) AS n FROM cluster_stats_dbp").to_pylist()[0]
    assert t == {"q": len(pruned), "k": len(pruned), "n": len(sd)}
    t = query(ds, "SELECT count(*) AS c FROM decisions_semdedup d JOIN clusters_km c USING (uid) "
                  "WHERE NOT d.kept").to_pylist()[0]
    assert t["c"] == 800 - len(sd)
    meta = json.loads((ds.root / "centroids" / "km" / "_meta.json").read_text())
    assert meta["k"] == 5 and meta["model_id"] == "m" and meta["spherical"] is True


def test_cli_errors_are_one_line(tmp_path, capsys):
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", clustered_embeddings(n=50, d=8, centers=2), rows_per_shard=50)
    code, _, err = _run(["dedup", "semantic", str(ds.root), "--eps", "0.1", "--engine", "local"], capsys)
    assert code == 2 and "clustering 'kmeans' not found" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["cluster", str(ds.root), "-k", "100", "--engine", "local"], capsys)
    assert code == 2 and "at least k=100" in err
    code, _, err = _run(["cluster", str(ds.root), "-k", "2", "--model", "nope", "--engine", "local"], capsys)
    assert code == 2 and "embeddings/nope not found" in err
