"""The shared selection finish: streamed subset files equal whole-array writes, multi-stage kept
uids stream right across batch boundaries, one decision per uid is enforced, counts add up."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from curate.decisions import decisions_table
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection, write_decisions_frame, write_kept_subset
from curate.subset import read_subset, write_subset, write_subset_sorted
from curate.subset_records import NotAUid, records_from_hex
from curate.tables import Dataset
from curate.uid import UID_RE


def _uids(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["%032x" % rng.getrandbits(128) for _ in range(n)]


def _digest(ds: Dataset, name: str) -> dict[str, str]:
    d = ds.root / "subsets" / name
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in ("uids.parquet", "uids.npy")}


@pytest.mark.parametrize("n", [0, 1, 65536, 65537, 140_001])
def test_streamed_subset_has_the_bytes_of_a_whole_array_write(tmp_path, n):
    ds = Dataset(tmp_path / "d")
    uids = _uids(n)
    if n > 2:
        uids[2] = uids[1]  # a repeated uid (upsampling) is kept
    write_subset(ds, "whole", uids)
    s = sorted(uids)
    chunks = [pa.array(s[i:i + 9999], pa.string()) for i in range(0, len(s), 9999)]
    write_subset_sorted(ds, "streamed", chunks, len(s))
    assert _digest(ds, "whole") == _digest(ds, "streamed")
    assert read_subset(ds, "streamed") == s
    assert read_subset(ds.root / "subsets" / "streamed" / "uids.npy") == s


def test_streamed_subset_refuses_unsorted_or_bad_uids(tmp_path):
    ds = Dataset(tmp_path / "d")
    a, b = sorted(_uids(2))
    with pytest.raises(DatasetError, match="sorted"):
        write_subset_sorted(ds, "x", [pa.array([b]), pa.array([a])], 2)
    with pytest.raises(DatasetError, match="hex uid"):
        write_subset_sorted(ds, "x", [pa.array(["NOT-A-UID"])], 1)
    # the same high 64 bits, the low ones going down: within a chunk and across chunks
    lo_down = ["0" * 16 + "0" * 15 + "2", "0" * 16 + "0" * 15 + "1"]
    with pytest.raises(DatasetError, match="sorted"):
        write_subset_sorted(ds, "x", [pa.array(lo_down)], 2)
    with pytest.raises(DatasetError, match="sorted"):
        write_subset_sorted(ds, "x", [pa.array(lo_down[:1]), pa.array(lo_down[1:])], 2)
    # repeats are counted once, within a chunk and across a chunk boundary
    write_subset_sorted(ds, "x", [pa.array([a, a, b]), pa.array([b, b])], 5)
    m = __import__("json").loads((ds.root / "subsets" / "x" / "_manifest.json").read_text())
    assert (m["count"], m["distinct"]) == (5, 2) and read_subset(ds, "x") == [a, a, b, b, b]


def test_checked_records_follow_the_uid_rule(tmp_path):
    """The finish checks uids on the bytes it decodes (no regex): the same rule as UID_RE, the
    first bad row named, in whichever chunk and at whichever offset it comes."""
    good = _uids(200, seed=3)
    bad = ["0" * 31, "0" * 33, "A" * 32, "0" * 31 + "g", "0" * 31 + " ", "0" * 30 + "é", "0" * 31 + "\n", ""]
    for b in bad:
        assert UID_RE.match(b) is None
        for at in (0, 57, 199):
            values = good[:at] + [b] + good[at:]
            with pytest.raises(NotAUid) as e:
                records_from_hex(pa.array(values), checked=True)
            assert e.value.row == at, (b, at)
            with pytest.raises(NotAUid) as e:  # a slice: the row is counted from the slice's start
                records_from_hex(pa.array(["z"] * 5 + values).slice(5), checked=True)
            assert e.value.row == at
    with pytest.raises(NotAUid) as e:
        records_from_hex(pa.array(good[:4] + [None]), checked=True)
    assert e.value.row == 4
    edges = ["0" * 32, "f" * 32, "0123456789abcdef" * 2, "fedcba9876543210" * 2]
    records = records_from_hex(pa.array(good + edges), checked=True)
    assert records.tolist() == [(int(u[:16], 16), int(u[16:], 16)) for u in good + edges]
    assert np.array_equal(records, records_from_hex(pa.array(good + edges)))
    assert len(records_from_hex(pa.array([], pa.string()), checked=True)) == 0
    ds = Dataset(tmp_path / "d")
    s = sorted(good)
    with pytest.raises(DatasetError, match=r"subset 'x': 'A{32}' is not a 32-char lowercase hex uid"):
        write_subset_sorted(ds, "x", [pa.array(s[:10]), pa.array(s[10:20] + ["A" * 32])], 21)


def test_kept_by_every_stage_streams_across_batches(tmp_path):
    """Two filters' decisions sorted by (uid, stage): a uid is in the subset only if both kept
    it, also where its two rows fall in different read batches (65,536 rows each)."""
    ds = Dataset(tmp_path / "d")
    n = 40_001  # 80,002 rows: the batch boundary splits some uid's pair
    uids = _uids(n, seed=3)
    rng = np.random.default_rng(0)
    ka, kb = rng.random(n) < 0.7, rng.random(n) < 0.6
    dec = pa.concat_tables([
        decisions_table(uids, "a", ka.tolist(), np.where(ka, "kept", "ra").tolist()),
        decisions_table(uids, "b", kb.tolist(), np.where(kb, "kept", "rb").tolist())])
    write_decisions_frame(ds, "run", LocalExecutor().frame_from_table(dec))
    both = sorted(u for u, x, y in zip(uids, ka, kb) if x and y)
    write_kept_subset(ds, "run", "both", len(both), {}, stages=2)
    assert read_subset(ds, "both") == both


def test_finish_counts_checks_and_writes(tmp_path):
    ds = Dataset(tmp_path / "d")
    uids = _uids(1000, seed=5)
    kept = [i % 3 != 0 for i in range(1000)]
    reason = ["kept" if k else ("far" if i % 2 else "near") for i, k in enumerate(kept)]
    values = np.linspace(-1, 1, 1000)
    dec = decisions_table(uids, "st", kept, reason, values.tolist())
    ex = LocalExecutor()
    r = finish_selection(ex, ds, "run", "st", ex.frame_from_table(dec), RunManifest("run", {}),
                         acted_on=("a value", None))
    assert r["counts"] == {"input": 1000, "kept": sum(kept), "removed": 1000 - sum(kept),
                           "reasons": {"far": reason.count("far"), "kept": sum(kept), "near": reason.count("near")}}
    assert r["guards"]["distributions"]["acted_on"]["n"] == 1000
    assert read_subset(ds, "run") == sorted(u for u, k in zip(uids, kept) if k)
    written = ds.read("decisions/run")
    assert written.column("uid").to_pylist() == sorted(uids) and r["decisions"].equals(written)
    # a uid decided twice is an error, found by the sort of the write: nothing is written
    twice = pa.concat_tables([dec, dec.slice(0, 1)])
    with pytest.raises(DatasetError, match="1 input uids got more than one decision"):
        finish_selection(ex, ds, "run2", "st", ex.frame_from_table(twice), RunManifest("run2", {}))
    assert not ds.has_table("decisions/run2") and not (ds.root / "subsets" / "run2").exists()


def _repeats_cases() -> dict[str, pa.Table]:
    """Decisions with repeated uids where a sorted write finds them: inside one range partition,
    repeated three times, every row twice, the same uid under two stages (which a range bound
    can split: first in one partition, last in the one before), and none."""
    uids = sorted(_uids(4000, seed=9))
    one = decisions_table(uids, "st", [True] * 4000, ["kept"] * 4000)
    return {"none": (one, 0),
            "inside": (pa.concat_tables([one, one.slice(17, 1), one.slice(3000, 1)]), 2),
            "three_times": (pa.concat_tables([one, one.slice(5, 1), one.slice(5, 1)]), 2),
            "every_row": (pa.concat_tables([one, one]), 4000),
            # (uid, "a") and (uid, "b") are different sort keys: a range bound can fall between them
            "two_stages": (pa.concat_tables([one, decisions_table(uids, "zz", [True] * 4000, ["kept"] * 4000)]), 4000)}


@pytest.mark.parametrize("case", list(_repeats_cases()))
def test_unique_write_counts_repeats_on_both_engines(tmp_path, spark, case):
    """``write_sorted(unique="uid")``: the same count of repeated rows locally and on Spark (at
    4 range partitions and at 1, so repeats sit inside partitions and across their boundaries),
    and no shard written when there are any."""
    from curate.engine.frame import RepeatedKeys
    from curate.engine.spark import SparkExecutor

    table, want = _repeats_cases()[case]
    executors = {"local": LocalExecutor(), "spark": SparkExecutor(spark)}
    for parts in ("4", "1"):
        spark.conf.set("spark.sql.shuffle.partitions", parts)
        try:
            for name, ex in executors.items():
                ds = Dataset(tmp_path / f"{name}-{parts}")
                frame = ex.frame_from_table(table)
                if want:
                    with pytest.raises(RepeatedKeys) as e:
                        write_decisions_frame(ds, "r", frame, unique=True)
                    assert e.value.count == want, (name, parts)
                    assert not ds.has_table("decisions/r")
                else:
                    assert write_decisions_frame(ds, "r", frame, unique=True)["rows"] == table.num_rows
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", "4")


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_uniform_decisions_equal_the_driver_built_table(engine, request):
    """``uniform_decisions`` (constant columns in the engine) gives the rows and types
    ``decisions_table`` builds for the same uids; a reason that contradicts ``kept`` is refused."""
    from curate.selection import DECISIONS, uniform_decisions

    ex = LocalExecutor()
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        ex = SparkExecutor(request.getfixturevalue("spark"))
    uids = _uids(300, seed=4)
    frame = ex.frame_from_table(pa.table({"uid": uids, "other": list(range(300))}))
    for kept, reason in ((True, "kept"), (False, "no_embedding")):
        got = uniform_decisions(frame, "st", kept, reason).collect_small(300, sort_by=["uid"])
        want = decisions_table(pa.array(sorted(uids)), "st", [kept] * 300, [reason] * 300)
        assert got.schema.names == DECISIONS.names
        assert got.cast(DECISIONS).equals(want), (got.slice(0, 2), want.slice(0, 2))
    with pytest.raises(ValueError, match="'kept' exactly where kept"):
        uniform_decisions(frame, "st", False, "kept")
