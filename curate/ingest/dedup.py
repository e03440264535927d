"""Exact dedup of ingest over keys only (hashes and input positions): the executor keeps the
earliest input row of each key in key ranges cut from the staged key samples; the
duplicates are listed with their source file and row. Folders are paths or URIs (the staging
of a dataset on a store is on the store)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.ingest.shards import ROW_ID_BITS
from curate.ingest.stage import STAGED_SCHEMA
from curate.tables import Dataset, load_schema


# Dedup works on one long per input row (file index and row packed, see ROW_ID_BITS).
KEY_SCHEMA = pa.schema([("uid", pa.string()), ("row_id", pa.int64())])
DUP_SCHEMA = pa.schema([("uid", pa.string()), ("duplicate_of", pa.string()), ("reason", pa.string()),
                        ("row_id", pa.int64())])


def dedup_pass(executor, keys, key: str, id_column: str, reason: str, sample: list[str], rows: int,
                folder) -> dict:
    """One exact-dedup pass over ``keys`` by the executor, in ranges of ``key`` cut from
    ``sample``: the earliest input row of each key is kept. Returns the kept files in key
    order, their row counts, and the duplicates' folder and count (``rows`` - kept)."""
    storage.remove_tree(folder)  # ranges of a killed run may differ
    cuts = _boundaries(sample, executor.key_ranges)
    kept = executor.first_by_key_ranges(keys, key, id_column, "row_id", cuts, str(storage.join(folder, "kept")))
    n_kept = sum(n for _, n in kept)
    dups_dir = str(storage.join(folder, "dups"))
    if n_kept < rows:  # only then a second pass lists the duplicates
        executor.duplicates_by_key_ranges(keys, key, id_column, "row_id", cuts, reason, dups_dir)
    return {"kept_files": [f for f, _ in kept], "kept_counts": [n for _, n in kept], "kept": n_kept,
            "dups_dir": dups_dir, "duplicates": rows - n_kept}


def report_pair_duplicates(executor, dataset: Dataset, keys, kept: dict, sample: list[str], sources: list[str],
                            folder, rows_per_shard: int, resume: bool) -> dict:
    """Faithful mode: the ``url_text_duplicates`` table lists every kept sample whose
    (url, text) an earlier kept sample already has (input order), pointing at that one. Keys
    only travel: the kept rows' pair keys, deduplicated in ranges as in ``dedup_pass``."""
    ex = executor
    storage.remove_tree(folder)
    kept_ids = ex.select_columns(ex.read_parquet(kept["kept_files"], KEY_SCHEMA), ["row_id"])
    kept_keys = ex.join_frames(ex.select_columns(keys, ["pair_key", "uid", "row_id"]), kept_ids, "row_id", "inner")
    cuts = _boundaries(sample, ex.key_ranges)
    ex.duplicates_by_key_ranges(kept_keys, "pair_key", "uid", "row_id", cuts, "same_url_text", str(folder))
    dups = with_source(ex, ex.read_parquet([str(folder)], DUP_SCHEMA), sources)
    return ex.write_sorted_table(dups, dataset, "url_text_duplicates", load_schema("url_text_duplicates").arrow(),
                                  ["source_file", "source_row"], rows_per_shard, skip_existing=resume)


def read_staged_rows(executor, staging, columns: list[str] | None = None):
    """The staged samples (``columns`` of them, or all) with their ``row_id``."""
    schema = STAGED_SCHEMA if columns is None else pa.schema([STAGED_SCHEMA.field(c) for c in columns])
    staged = executor.read_parquet([str(storage.join(staging, "samples"))], schema)
    return executor.with_packed_long(staged, "row_id", "file_index", "source_row", ROW_ID_BITS)


def with_source(executor, dups, sources: list[str]):
    """Duplicate keys with their input position unpacked from ``row_id`` and the source
    file named."""
    dups = executor.with_unpacked_long(dups, "row_id", "file_index", "source_row", ROW_ID_BITS)
    return executor.with_lookup(dups, "source_file", "file_index", sources)


def _boundaries(sample: list[str], ranges: int) -> list[str]:
    """Up to ``ranges`` - 1 cut points splitting the sampled keys into equal parts."""
    values = sorted(set(sample))
    cuts = [values[len(values) * i // ranges] for i in range(1, ranges)] if values else []
    return sorted(set(cuts))


_DUP_KEYS = pa.schema([("reason", pa.string()), ("file_index", pa.int64()), ("n", pa.int64())])


def _dup_keys(batch: pa.RecordBatch) -> pa.Table:
    """A duplicate's reason and input file index (``row_id``'s high bits), counted once."""
    files = pc.shift_right(batch.column("row_id"), ROW_ID_BITS)
    return pa.table([batch.column("reason"), files, pa.array(np.ones(batch.num_rows, np.int64))], schema=_DUP_KEYS)


def duplicate_counts(executor, passes: list[dict], inputs: int) -> tuple[dict, dict]:
    """Duplicates by reason and by input file index, summed by the engine from the dedup passes'
    files (the driver gets one row per (reason, input file); it read every duplicate's keys,
    file after file, before). ``inputs``: the number of input files (the bound on those rows)."""
    files = [f for p in passes if p["duplicates"] for f in storage.list_files(p["dups_dir"], recursive=True)
             if f.endswith(".parquet")]
    if not files:
        return {}, {}
    keys = pa.schema([DUP_SCHEMA.field("reason"), DUP_SCHEMA.field("row_id")])
    sums = (executor.frame_read(files, keys).map_batches(_dup_keys, _DUP_KEYS)
            .aggregate(["reason", "file_index"], {"n": ("n", "sum")}).collect_small(2 * max(inputs, 1)))
    by_reason: Counter = Counter()
    by_file: Counter = Counter()
    for reason, index, n in zip(*(sums.column(c).to_pylist() for c in ("reason", "file_index", "n"))):
        by_reason[reason] += n
        by_file[index] += n
    return dict(sorted(by_reason.items())), dict(by_file)
