"""The rows SemDeDup and DBP/SSP read: each embeddings shard joined with its aligned
``clusters/<name>`` shard (cluster, uid, distance[, embedding]), and the per-cluster sums both
jobs report (sizes, kept rows, summed distances in a fixed order)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.embedding_space.clusters import load_clustering
from curate.embedding_space.common import shard_tasks
from curate.embedding_space.jobs.shared import DECISIONS
from curate.embedding_space.vectors import embedding_binary, embedding_columns
from curate.errors import DatasetError
from curate.tables import Dataset

# decisions plus the row's cluster and distance, for the per-cluster stats of the run
DECISIONS_C = (DECISIONS.append(pa.field("cluster_id", pa.int32(), nullable=False))
               .append(pa.field("distance", pa.float32(), nullable=False))
               .append(pa.field("distance_sum", pa.float64(), nullable=False)))
# one row per cluster: its rows and their summed distance to the centroid
CLUSTER_SUMS = pa.schema([("cluster_id", pa.int32()), ("n", pa.int64()), ("distance_sum", pa.float64())])


def _distance_sum(group: pa.Table) -> float:
    """A cluster's summed distances, added in uid order: the same float wherever its rows came
    from (a sum in arrival order could differ in the last bit between partitionings)."""
    d = group.column("distance").take(pc.sort_indices(group.column("uid"))).to_numpy().astype(np.float64)
    return float(np.cumsum(d)[-1]) if len(d) else 0.0


def cluster_sums(group: pa.Table) -> pa.Table:
    return pa.table([pa.array([group.column("cluster_id")[0].as_py()], pa.int32()), pa.array([group.num_rows]),
                     pa.array([_distance_sum(group)])], schema=CLUSTER_SUMS)


def cluster_rows(task: dict):
    """(cluster_id, uid, distance[, embedding]) of one embeddings shard and its aligned clusters shard."""
    ds = Dataset(task["root"])
    cpath = ds.shard_path(f"clusters/{task['clusters']}", task["index"])
    if not storage.committed(cpath):
        raise DatasetError(f"{cpath} is missing: clusters/{task['clusters']} does not cover {task['path']} "
                           f"(rerun `curate cluster`)")
    cl = storage.read_parquet(cpath, columns=["uid", "cluster_id", "distance"])
    cols = [("cluster_id", cl.column("cluster_id")), ("uid", cl.column("uid")), ("distance", cl.column("distance"))]
    if task.get("embedding"):
        emb = storage.read_parquet(task["path"], columns=["uid", *embedding_columns(task["embedding"])])
        if emb.num_rows != cl.num_rows or not emb.column("uid").equals(cl.column("uid")):
            raise DatasetError(f"{cpath} does not match {task['path']} row for row (embeddings changed after "
                               f"clustering; rerun `curate cluster`)")
        cols.append(("embedding", embedding_binary(emb, task["embedding"], f"{task['path']}: ")))
    t = pa.table(dict(cols))
    if t.num_rows:
        yield from t.to_batches()


def row_schema(with_embedding: bool) -> pa.Schema:
    fields = [("cluster_id", pa.int32()), ("uid", pa.string()), ("distance", pa.float32())]
    if with_embedding:
        fields.append(("embedding", pa.binary()))
    return pa.schema(fields)


def clustering_tasks(ds: Dataset, clusters: str, with_embedding: bool):
    _, meta = load_clustering(ds, clusters)
    table = meta["embeddings_table"]
    if not ds.has_table(table):
        raise DatasetError(f"clustering {clusters!r} was made from {table}, which is missing in {ds.root}")
    return meta, table, shard_tasks(ds, table, clusters=clusters,
                                    embedding=meta["embedding"] if with_embedding else None)


def per_cluster(dec, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(size, kept, d_intra) per cluster over the run's input rows, summed by the engine."""
    t = dec.aggregate(["cluster_id", "kept"], {"n": ("uid", "count"), "dsum": ("distance_sum", "max")}
                      ).collect_small(2 * k)
    cid = t.column("cluster_id").to_numpy()
    n = t.column("n").to_numpy().astype(np.int64)
    kept_rows = t.column("kept").to_numpy(zero_copy_only=False).astype(bool)
    size = np.bincount(cid, weights=n, minlength=k).astype(np.int64)
    kept = np.bincount(cid[kept_rows], weights=n[kept_rows], minlength=k).astype(np.int64)
    dsum = np.zeros(k)
    dsum[cid] = t.column("dsum").to_numpy()  # the same per-cluster value on its kept and removed rows
    with np.errstate(invalid="ignore", divide="ignore"):
        d_intra = np.where(size > 0, dsum / np.maximum(size, 1), np.nan)
    return size, kept, d_intra


def with_cluster(out: pa.Table, group: pa.Table) -> pa.Table:
    cid = np.full(out.num_rows, group.column("cluster_id")[0].as_py(), dtype=np.int32)
    return (out.append_column("cluster_id", pa.array(cid)).append_column("distance", group.column("distance"))
            .append_column("distance_sum", pa.array(np.full(out.num_rows, _distance_sum(group)))))


