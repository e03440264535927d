"""SQL over a dataset: DuckDB views named after every table folder, read-only.

``samples/`` -> view ``samples``; nested tables join their path with ``_``
(``embeddings/ViT-B-32`` -> ``embeddings_vit_b_32``). A folder whose sub-tables share one
column set also gets a union view named after it (``decisions`` = all decision runs), with
a ``_table`` column saying which sub-table a row came from.

- ``views``: the view names and the SQL behind them.
- ``connection``: the read-only connection, queries under a time and memory limit.
- ``spill``: DuckDB's private spill folder, its size cap, stale folders of killed processes.
- ``select``: subsets and recipe decisions from a selection query (``curate select --sql``,
  the recipe's ``sql`` stage).
"""

from curate.sql.connection import (DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S, check_read_only, connect, limited, query,
                              query_batches)
from curate.sql.spill import DEFAULT_MAX_SPILL, MAX_SPILL_ENV, max_spill, remove_stale_spill_dirs, spill_dir
from curate.sql.views import shard_list, table_views, view_name

__all__ = [
    "DEFAULT_MAX_SPILL", "DEFAULT_MEMORY_LIMIT", "DEFAULT_TIMEOUT_S", "MAX_SPILL_ENV", "check_read_only", "connect",
    "limited", "max_spill", "query", "query_batches", "remove_stale_spill_dirs", "shard_list", "spill_dir",
    "table_views", "view_name",
]
