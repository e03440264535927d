"""Content-addressed cache of stage outputs under ``DATASET/_cache/recipe/<key>/``.

The key of a stage run is the hash of (input subset hash, stage kind, parameters, code hash,
fingerprints of the tables it reads). Change one stage's parameters and its key changes;
its output subset then differs (or not), so the keys after it change only when their
input really changed. An entry's tables are written by the workers; its ``meta.json``, written
last and atomically, commits it and records every table's fingerprint, checked on read.

The subset hash changed in this version (``uid_tables.DIGEST_VERSION``: an order-free sum the
workers compute, instead of a sha256 of the sorted uids on the driver): every key changes
once, so a cache made before is simply recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curate import storage
from curate.manifest import stable_hash
from curate.recipe.uid_tables import UidTable
from curate.tables import Dataset, atomic_write_bytes, load_schema
from curate.tables.fingerprint import table_fingerprint  # the cache's notion of a table's content

CACHE_DIR = "_cache/recipe"


def subset_hash(uids: pa.Array) -> str:
    """Hash of a uid multiset (order-independent; repeats count): the digest the workers
    compute for the recipe's tables (``curate.recipe.uid_tables``), here over an array."""
    from curate.recipe.uid_tables import subset_digest_array

    return subset_digest_array(uids.cast(pa.string()))


def cache_key(input_hash: str, kind: str, params: dict, code: str, reads: list[dict]) -> str:
    return stable_hash({"input": input_hash, "kind": kind, "params": params, "code": code, "reads": reads})[:32]


@dataclass(frozen=True)
class CacheEntry:
    """A cached stage run: its decisions table and output uid table (dataset table names under
    the entry's folder, or the stage's input table for a pass-through) and its meta."""

    decisions: str
    uids: UidTable
    meta: dict


class StageCache:
    """Entries ``_cache/recipe/<key>/``: ``decisions/`` and ``uids/`` tables written by the
    workers, then ``meta.json`` (written last: an entry without it does not exist) holding the
    counts, the output uid table's reference and every table's fingerprint, checked on read."""

    def __init__(self, dataset: Dataset, enabled: bool = True):
        self.dataset, self.enabled = dataset, enabled
        self.root = dataset.path(CACHE_DIR)

    def path(self, key: str) -> Path | str:
        return storage.join(self.root, key)

    def table(self, key: str, what: str) -> str:
        return f"{CACHE_DIR}/{key}/{what}"

    def begin(self, key: str) -> None:
        """Clear what a killed earlier run left under ``key`` before writing its tables."""
        storage.remove_tree(self.path(key))

    def get(self, key: str) -> CacheEntry | None:
        """The entry of ``key`` whose tables still match their fingerprints, or None."""
        meta_path = storage.join(self.path(key), "meta.json")
        if not self.enabled or not storage.exists(meta_path):
            return None
        try:
            meta = json.loads(storage.read_bytes(meta_path))
            for name, fp in meta["fingerprints"].items():
                if table_fingerprint(self.dataset, name) != fp:
                    return None  # a damaged or replaced table: recomputed, never trusted
            u = meta["uids"]
            return CacheEntry(meta["decisions"], UidTable(u["table"], int(u["rows"]), int(u["distinct"])), meta)
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def commit(self, key: str, decisions: str, uids: UidTable, meta: dict) -> CacheEntry:
        """Record the entry of ``key`` whose tables are written (fingerprints taken now)."""
        meta = dict(meta, decisions=decisions,
                    uids={"table": uids.name, "rows": uids.rows, "distinct": uids.distinct},
                    fingerprints={t: table_fingerprint(self.dataset, t) for t in sorted({decisions, uids.name})})
        atomic_write_bytes(storage.join(self.path(key), "meta.json"),
                           (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
        return CacheEntry(decisions, uids, meta)

    def put(self, key: str, decisions: pa.Table, uids: pa.Array, meta: dict) -> CacheEntry:
        """An entry from tables the caller holds (small ones: tests, the legacy stage adapter)."""
        from curate.engine import LocalExecutor
        from curate.recipe.uid_tables import write_uid_table
        from curate.selection import DECISIONS_SHARD_ROWS

        ex = LocalExecutor()
        self.begin(key)
        dec = self.table(key, "decisions")
        ex.frame_from_table(load_schema("decisions").conform(decisions)).write_sorted(
            self.dataset, dec, "decisions", ["uid", "stage"], DECISIONS_SHARD_ROWS)
        out = write_uid_table(self.dataset, self.table(key, "uids"),
                              ex.frame_from_table(pa.table({"uid": uids.cast(pa.string())})))
        return self.commit(key, dec, out, meta)
