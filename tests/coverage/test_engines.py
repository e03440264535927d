"""The coverage table is byte-identical from the local executor and Spark local mode."""

from __future__ import annotations

from curate.coverage import from_file, run_coverage
from curate.coverage.job import subset_uids_path
from curate.engine import LocalExecutor
from curate.subset import write_subset

from .conftest import uid_of, write_pool, write_tiny_embeddings
from .test_counts import CONCEPTS, SUBSET_A, SUBSET_B, TEXTS


def test_local_and_spark_write_the_same_bytes(spark, tmp_path):
    from curate.engine.spark import SparkExecutor

    (tmp_path / "concepts.txt").write_text(CONCEPTS)
    concepts = from_file(tmp_path / "concepts.txt")
    out = {}
    for label, executor in (("local", LocalExecutor()), ("spark", SparkExecutor(spark))):
        ds = write_pool(tmp_path / label, TEXTS * 7, shards=5)
        u = uid_of(ds)
        write_subset(ds, "a", [u[i] for i in SUBSET_A])
        write_subset(ds, "b", [u[i] for i in SUBSET_B + [30, 31, 32]])
        model = write_tiny_embeddings(ds, sorted(u.values())[:50], rows_per_shard=12)
        summary = run_coverage(ds, concepts, executor, name="cov", embeddings=model, threshold=0.0,
                               subsets={s: subset_uids_path(ds, s) for s in ("a", "b")}, min_pool_count=1)
        out[label] = ((ds.table_dir("coverage/cov") / "part-00000.parquet").read_bytes(),
                      (ds.table_dir("coverage/cov") / "_summary.json").read_text(), summary)
    assert out["local"][0] == out["spark"][0]
    assert out["local"][1] == out["spark"][1]
    s = out["local"][2]["sources"]
    assert s["caption"]["pool_size"] == 70 and s["image"]["pool_size"] == 50 == s["caption+image"]["pool_size"]
    assert s["caption"]["subsets"]["a"]["size"] == 5 and s["caption"]["subsets"]["b"]["size"] == 6
