"""``curate select --sql``: a subset straight from a DuckDB query (DataComp's "bring your own filter")."""

from __future__ import annotations

import time

import pyarrow.compute as pc

from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.recipe.duck import connect, query_uids
from curate.subset import write_subset
from curate.tables import Dataset
from curate.uid import UID_RE


def select_sql(dataset: Dataset, query: str, name: str, embedding_model: str | None = None,
               allow_unknown: bool = False) -> dict:
    """Run ``query``, check its uids, write ``subsets/<name>``; returns counts and the path."""
    if not dataset.root.is_dir():
        raise DatasetError(f"dataset folder {dataset.root} does not exist")
    t0 = time.perf_counter()
    from curate.models.scorers import embeddings_id

    embedding_model = embeddings_id(embedding_model, dataset.root)  # a scorer's name: its embeddings
    con = connect(dataset, embedding_model)
    uids = query_uids(con, query).column("uid").combine_chunks()
    nulls = uids.null_count
    uids = uids.drop_null()
    values = uids.to_pylist()
    for i, u in enumerate(values):
        if not UID_RE.match(u):
            raise DatasetError(f"query result row {i}: {u!r} is not a 32-char lowercase hex uid")
    unknown = 0
    if dataset.has_table("samples"):
        known = dataset.read("samples", columns=["uid"]).column("uid").combine_chunks()
        mask = pc.is_in(uids, value_set=known)
        unknown = len(uids) - pc.sum(mask).as_py() if len(uids) else 0
        if unknown and not allow_unknown:
            first = uids.filter(pc.invert(mask))[0].as_py()
            raise DatasetError(f"query returned {unknown} uids that are not in samples (first: {first}); "
                               f"pass --allow-unknown to drop them")
        uids = uids.filter(mask)
    m = RunManifest(f"select-{name}", {"sql": query, "embedding_model": embedding_model})
    counts = {"returned": len(values) + nulls, "null_uid": nulls, "unknown_uid": unknown, "selected": len(uids)}
    path = write_subset(dataset, name, uids, manifest={"stage": "select_sql", "sql": query, "counts": counts,
                                                       "seconds": round(time.perf_counter() - t0, 4)})
    m["counts"] = counts
    m["outputs"] = {"subset": f"subsets/{name}"}
    m.write(dataset)
    return {"count": len(uids), "distinct": len(pc.unique(uids)) if len(uids) else 0, "path": str(path), **counts}
