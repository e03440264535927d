"""Caption statistics (language, words, characters, fastText tokens), vectorised over Arrow.

Each count reproduces the Python expression DataComp evaluates per row:
``len(text.split())``, ``len(text)`` and ``len(fasttext.tokenize(text))``. The
``text_stats`` table stores them per sample, row-aligned with ``samples`` shard by shard.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import InputFileError
from curate.filters import langid
from curate.tables import Dataset, load_schema, write_parquet_atomic

# A word is a run of characters outside Python's str.isspace() set (which str.split() uses):
# \t-\r, \x1c-\x20, \x85 and the Unicode separators Z*.
_PY_WORD_RE2 = r"[^\t-\r\x{1c}-\x{20}\x{85}\p{Z}]+"
# fastText's Dictionary::readWord splits on these bytes only; each "\n" adds an EOS token.
_FT_WORD_RE2 = r"[^ \n\r\t\x{0b}\x{0c}\x{00}]+"

TABLE = "text_stats"
_SOURCE_KEY = b"curate.text_stats.source"


def word_count(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``len(t.split())`` for every string."""
    return pc.count_substring_regex(texts, _PY_WORD_RE2).cast(pa.int32())


def char_count(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``len(t)``: Unicode code points."""
    return pc.utf8_length(texts).cast(pa.int32())


def token_count(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``len(fasttext.tokenize(t))``: whitespace-separated tokens plus one per newline."""
    words = pc.count_substring_regex(texts, _FT_WORD_RE2)
    newlines = pc.count_substring(texts, "\n")
    return pc.add(words, newlines).cast(pa.int32())


def text_stats(uids: pa.Array, texts: pa.Array, model) -> pa.Table:
    """The ``text_stats`` rows for one batch of captions."""
    lang, score = langid.predict_languages(texts, model)
    cols = [uids, lang, score, word_count(texts), char_count(texts), token_count(texts)]
    cols = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
    return pa.Table.from_arrays(cols, schema=load_schema(TABLE).arrow())


# ---------------------------------------------------------------- per-shard task
def _source_key(samples_shard: Path, model_path: str) -> str:
    st = samples_shard.stat()
    return f"{samples_shard.name}:{st.st_size}:{st.st_mtime_ns}:{Path(model_path).name}:{os.path.getsize(model_path)}"


def _is_current(out: Path, key: str) -> bool:
    if not out.exists():
        return False
    try:
        meta = pq.read_schema(out).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return False
    return meta.get(_SOURCE_KEY, b"").decode() == key


def text_stats_task(task: dict) -> dict:
    """Compute ``text_stats`` shard i from ``samples`` shard i (skipped when already current).

    The output records which samples shard (size, mtime) and which model made it, so a
    rerun recomputes exactly the shards whose input or model changed.
    """
    ds = Dataset(task["root"])
    src = Path(task["samples_shard"])
    out = ds.shard_path(TABLE, task["index"])
    key = _source_key(src, task["lid_model"])
    if not task.get("recompute") and _is_current(out, key):
        return {"rows": pq.ParquetFile(out).metadata.num_rows, "skipped": 1}
    try:
        t = pq.read_table(src, columns=["uid", "text"])
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(str(src), f"cannot read columns uid, text ({e})") from e
    for name in ("uid", "text"):
        col = t.column(name)
        if col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise InputFileError(str(src), f"row {row}: column {name!r} is null")
    model = langid.load_model(task["lid_model"])
    parts = []
    for b in t.to_batches(max_chunksize=65536):
        parts.append(text_stats(b.column(0), b.column(1), model))
    stats = pa.concat_tables(parts) if parts else load_schema(TABLE).arrow().empty_table()
    meta = dict(stats.schema.metadata or {})
    meta[_SOURCE_KEY] = key.encode()
    write_parquet_atomic(stats.replace_schema_metadata(meta), out)
    return {"rows": stats.num_rows, "skipped": 0}


def compute_text_stats(dataset: Dataset, executor, lid_model: str | None = None, recompute: bool = False) -> dict:
    """Write ``text_stats`` for every ``samples`` shard; returns rows, shards computed and skipped."""
    model_path = str(langid.resolve_model_path(lid_model))
    shards = dataset.shards("samples")
    tasks = [{"root": str(dataset.root), "samples_shard": str(p), "index": i, "lid_model": model_path,
              "recompute": recompute} for i, p in enumerate(shards)]
    results = executor.map_tasks(tasks, text_stats_task, description="text stats")
    # A shorter samples table leaves stale shards behind: drop them.
    keep = {dataset.shard_path(TABLE, i).name for i in range(len(shards))}
    for old in dataset.shards(TABLE):
        if old.name not in keep:
            old.unlink()
    return {"rows": sum(r["rows"] for r in results), "shards": len(tasks),
            "skipped_shards": sum(r["skipped"] for r in results), "lid_model": model_path}
