"""The subset a recipe starts from (``input: all | downloaded | subset:<name>``) as a uid table."""

from __future__ import annotations

import pyarrow as pa

from curate.engine import LocalExecutor
from curate.errors import DatasetError, RecipeError
from curate.storage import remove_tree
from curate.recipe.uid_tables import UidTable, counted_uid_table, write_uid_table
from curate.tables import Dataset


def initial_uids(dataset: Dataset, spec: str) -> pa.Array:
    """The subset a recipe starts from, as an array (small pools, tools; the runner itself
    uses ``initial_table``)."""
    ex = LocalExecutor()
    t = initial_table(dataset, spec, ex, "_tmp/recipe-initial-uids")
    try:
        return t.frame(dataset, ex).table.column("uid").combine_chunks().cast(pa.string())
    finally:
        if t.name.startswith("_tmp/"):
            remove_tree(dataset.table_dir(t.name))


def initial_table(dataset: Dataset, spec: str, executor, work: str) -> UidTable:
    """The subset a recipe starts from as a uid table: all samples (the ``samples`` table
    itself), the downloaded ones (written by the workers under ``work``), or a named subset."""
    if spec == "all":
        return counted_uid_table(dataset, "samples", executor)
    if spec == "downloaded":
        if not dataset.has_table("downloads"):
            raise DatasetError(f"{dataset.root}: no downloads table; run `curate download` first "
                               f"or start the recipe with `input: all`")
        schema = pa.schema([("uid", pa.string()), ("status", pa.string())])
        frame = (executor.frame_read([str(p) for p in dataset.shards("downloads")], schema)
                 .keep_values("status", pa.array(["success"])).select(["uid"]))  # filtered where read
        return write_uid_table(dataset, work, frame)
    if spec.startswith("subset:"):
        name = spec[len("subset:"):]
        if not dataset.has_table(f"subsets/{name}"):
            raise DatasetError(f"subset not found: {dataset.path(f'subsets/{name}/uids.parquet')}")
        return counted_uid_table(dataset, f"subsets/{name}", executor)
    raise RecipeError(f"unknown recipe input {spec!r}")
