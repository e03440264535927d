"""Cutting ordered parts into shards of a fixed row count (no Spark)."""

import pyarrow as pa
import pyarrow.parquet as pq

from curate.ingest.shards import plan_segments, read_segments


def test_plan_segments_cuts_exact_shards_across_parts():
    assert plan_segments([5, 0, 3, 9], 4) == [
        [(0, 0, 4)], [(0, 4, 5), (2, 0, 3)], [(3, 0, 4)], [(3, 4, 8)], [(3, 8, 9)]]
    assert plan_segments([], 4) == []
    assert plan_segments([0, 0], 4) == []
    assert plan_segments([4, 4], 4) == [[(0, 0, 4)], [(1, 0, 4)]]


def test_read_segments_concatenates_the_slices_in_order(tmp_path):
    paths = []
    for i, n in enumerate([5, 3]):
        p = tmp_path / f"p{i}.parquet"
        pq.write_table(pa.table({"x": [f"{i}-{j}" for j in range(n)]}), p)
        paths.append(str(p))
    shards = plan_segments([5, 3], 3)
    got = [read_segments(paths, s).column("x").to_pylist() for s in shards]
    assert got == [["0-0", "0-1", "0-2"], ["0-3", "0-4", "1-0"], ["1-1", "1-2"]]
