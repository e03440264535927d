"""A subset written from workers' parts (``curate.subset_parts``: one task a shard reads,
checks and converts its kept uids, the driver appends the parts) has the bytes and counts of
the driver's one pass: one-stage and multi-stage decisions whose uids straddle shards (a run
over three shards, shards of one run), uid tables with repeats, shards with nothing kept; the
same refusals."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from curate.decisions import decisions_table
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.subset import read_subset
from curate.subset_parts import write_subset_from_table
from curate.tables import Dataset


@pytest.fixture(autouse=True)
def parts_on_two_slots(monkeypatch):
    """local[2] (2 task slots) writes from parts here, as a cluster does (the default wants 8)."""
    import curate.subset_parts

    monkeypatch.setattr(curate.subset_parts, "PARTS_MIN_SLOTS", 2)


def _uids(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return sorted(f"{rng.getrandbits(128):032x}" for _ in range(n))


def _files(ds: Dataset, name: str) -> dict[str, str]:
    d = ds.root / "subsets" / name
    out = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in ("uids.parquet", "uids.npy")}
    out["manifest"] = json.loads((d / "_manifest.json").read_text())
    return out


def _decisions(uids: list[str], stages: int, seed: int) -> tuple[pa.Table, list[str]]:
    """Decisions sorted by (uid, stage), ``stages`` rows a uid; the uids every stage kept."""
    rng = np.random.default_rng(seed)
    kept = rng.random((len(uids), stages)) < (0.85 if stages > 1 else 0.6)
    kept[: len(uids) // 3] = True  # runs kept whole, at the first shards' edges too
    kept[-3:] = False
    t = pa.concat_tables([decisions_table(uids, f"s{j}", kept[:, j].tolist(),
                                          np.where(kept[:, j], "kept", "no").tolist()) for j in range(stages)])
    return t.sort_by([("uid", "ascending"), ("stage", "ascending")]), [u for i, u in enumerate(uids) if kept[i].all()]


@pytest.mark.parametrize("stages", [1, 3])
def test_parts_have_the_bytes_of_the_one_pass(tmp_path, spark, stages):
    """Shards of 1, 2, 4 and 7 rows (a three-stage uid over three shards, shards that are one
    run, runs cut at every offset) and of 1,000 (one shard: the one pass itself): the subset's
    files and manifest equal the driver's one pass, whichever the cut."""
    from curate.engine.spark import SparkExecutor

    uids = _uids(40, seed=stages)
    dec, want = _decisions(uids, stages, seed=stages)
    for rows_per_shard in (1, 2, 4, 7, 1000):
        one_pass, parts = Dataset(tmp_path / f"a{rows_per_shard}"), Dataset(tmp_path / f"b{rows_per_shard}")
        ex = SparkExecutor(spark)
        for ds, e in ((one_pass, LocalExecutor()), (parts, ex)):
            ds.write_table("decisions/r", dec, schema="decisions", rows_per_shard=rows_per_shard)
            write_subset_from_table(e, ds, "s", "decisions/r", "kept", len(want), {"stage": "t"}, stages)
        shards = -(-dec.num_rows // rows_per_shard)
        # one task and one summary back a shard; a one-shard table is the driver's one pass
        assert ex.driver_counter.by_call.get("map_tasks", 0) == (shards if shards > 1 else 0)
        assert _files(parts, "s") == _files(one_pass, "s"), rows_per_shard
        assert read_subset(parts, "s") == want
        assert _files(parts, "s")["manifest"]["distinct"] == len(want)
        assert not (parts.root / "_tmp").exists() or not any((parts.root / "_tmp").iterdir())


def test_few_task_slots_keep_the_one_pass(tmp_path, spark, monkeypatch):
    """Below ``PARTS_MIN_SLOTS`` (Spark local mode on a laptop) the driver's one pass is faster
    than tasks on the same cores: no tasks are run."""
    import curate.subset_parts
    from curate.engine.spark import SparkExecutor

    monkeypatch.setattr(curate.subset_parts, "PARTS_MIN_SLOTS", 8)
    dec, want = _decisions(_uids(20), 1, seed=1)
    ds, ex = Dataset(tmp_path / "d"), SparkExecutor(spark)
    ds.write_table("decisions/r", dec, schema="decisions", rows_per_shard=3)
    write_subset_from_table(ex, ds, "s", "decisions/r", "kept", len(want))
    assert ex.task_slots == 2 and ex.driver_counter.by_call.get("map_tasks", 0) == 0
    assert read_subset(ds, "s") == want


def test_uid_tables_with_repeats_and_empty_shards(tmp_path, spark):
    """A uid table (every row is a uid of the subset, repeats kept: upsampling) whose repeats
    straddle shards, and decisions whose middle shards keep nothing."""
    from curate.engine.spark import SparkExecutor

    u = _uids(6, seed=7)
    uids = [u[0]] * 5 + [u[1], u[2], u[2]] + [u[3]] * 4 + [u[4], u[5]]
    table = pa.table({"uid": pa.array(uids, pa.string())})
    dec = decisions_table(u * 1, "s", [True, False, False, False, False, True], ["kept", "x", "x", "x", "x", "kept"])
    for case, (t, column, schema, count) in {"repeats": (table, None, "subset", len(uids)),
                                             "nothing kept between": (dec, "kept", "decisions", 2)}.items():
        got = {}
        for name, ex in (("one", LocalExecutor()), ("parts", SparkExecutor(spark))):
            ds = Dataset(tmp_path / case.replace(" ", "-") / name)
            ds.write_table("t", t, schema=schema, rows_per_shard=2)
            write_subset_from_table(ex, ds, "s", "t", column, count)
            got[name] = _files(ds, "s")
        assert got["parts"] == got["one"], case
    assert got["parts"]["manifest"]["count"] == 2
    assert _files(Dataset(tmp_path / "repeats" / "parts"), "s")["manifest"] == {"name": "s", "count": 14,
                                                                                "distinct": 6}


def test_parts_refuse_what_the_one_pass_refuses(tmp_path, spark):
    """Shards out of order (found across parts, on their first and last uids), a bad uid (named,
    from the task that found it), a count that is not the one announced: one line each, and no
    subset written."""
    from curate.cli import _user_message
    from curate.engine.spark import SparkExecutor
    from curate.tables.atomic import write_parquet_atomic

    ex = SparkExecutor(spark)
    u = _uids(6, seed=11)
    ds = Dataset(tmp_path / "d")
    for i, part in enumerate((u[3:], u[:3])):  # the second shard's uids sort before the first's
        write_parquet_atomic(pa.table({"uid": pa.array(part, pa.string())}), ds.shard_path("t", i))
    with pytest.raises(DatasetError, match="^subset 's': uids not in sorted order$"):
        write_subset_from_table(ex, ds, "s", "t", None, 6)
    bad = Dataset(tmp_path / "bad")
    for i, part in enumerate((u[:3], u[3:5] + ["A" * 32])):
        write_parquet_atomic(pa.table({"uid": pa.array(part, pa.string())}), bad.shard_path("t", i))
    with pytest.raises(Exception) as e:  # a worker's error: the CLI's one line names it
        write_subset_from_table(ex, bad, "s", "t", None, 6)
    assert _user_message(e.value) == f"subset 's': {'A' * 32!r} is not a 32-char lowercase hex uid"
    good = Dataset(tmp_path / "good")
    good.write_table("t", pa.table({"uid": pa.array(u, pa.string())}), schema="subset", rows_per_shard=4)
    with pytest.raises(DatasetError, match="^subset 's': 6 uids written, 7 announced$"):
        write_subset_from_table(ex, good, "s", "t", None, 7)
    for d in (ds, bad, good):
        assert not (d.root / "subsets" / "s").exists() or not any((d.root / "subsets" / "s").iterdir())
