"""Datasets, tables and their schemas.

A dataset is a folder of tables. A table is a folder of Parquet shards
(``part-00000.parquet``...) that share one Arrow schema, defined once in ``schemas/``.
Folders and files whose name starts with ``_`` or ``.`` (run manifests, temporary
files) are never part of a table.
"""

from curate.tables.schema import TableSchema, load_schema, schema_names
from curate.tables.atomic import atomic_write_bytes, write_parquet_atomic
from curate.tables.dataset import Dataset, ShardWriter

__all__ = [
    "TableSchema",
    "load_schema",
    "schema_names",
    "Dataset",
    "ShardWriter",
    "atomic_write_bytes",
    "write_parquet_atomic",
]
