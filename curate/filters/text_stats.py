"""Caption statistics (language, words, characters, fastText tokens), vectorised over Arrow.

Each count reproduces the Python expression DataComp evaluates per row:
``len(text.split())``, ``len(text)`` and ``len(fasttext.tokenize(text))``. The
``text_stats`` table stores them per sample, row-aligned with ``samples`` shard by shard.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.errors import InputFileError
from curate.filters import langid
from curate.tables import Dataset, load_schema, write_parquet_atomic

# A word is a run of characters outside Python's str.isspace() set (which str.split() uses):
# \t-\r, \x1c-\x20, \x85 and the Unicode separators Z*.
_PY_WORD_RE2 = r"[^\t-\r\x{1c}-\x{20}\x{85}\p{Z}]+"

TABLE = "text_stats"
_SOURCE_KEY = b"curate.text_stats.source"


# Separator bytes: Python's ASCII whitespace (str.split on an ASCII string) and fastText's.
_PY_ASCII_SEP = np.zeros(256, dtype=bool)
_PY_ASCII_SEP[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_FT_SEP = np.zeros(256, dtype=bool)
_FT_SEP[[32, 10, 13, 9, 11, 12, 0]] = True


def _string_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.string())
    return texts


def _byte_runs(texts: pa.Array, is_sep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per string: runs of non-separator bytes, and newline bytes (numpy over the UTF-8 buffer)."""
    n = len(texts)
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset: texts.offset + n + 1]
    data_buf = texts.buffers()[2]
    if n == 0 or data_buf is None or offsets[-1] == offsets[0]:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]: offsets[-1]]
    rel = (offsets - offsets[0]).astype(np.int64)
    sep = is_sep[data]
    start = ~sep
    start[1:] &= sep[:-1]  # a run starts after a separator...
    firsts = rel[:-1][rel[1:] > rel[:-1]]
    start[firsts] = ~sep[firsts]  # ...or at the first byte of its string
    starts = np.flatnonzero(start)  # sparse positions: cheaper than a cumsum over every byte
    newlines = np.flatnonzero(data == 10)
    lo, hi = rel[:-1], rel[1:]
    runs = np.searchsorted(starts, hi) - np.searchsorted(starts, lo)
    nl = np.searchsorted(newlines, hi) - np.searchsorted(newlines, lo)
    return runs, nl


def word_count(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``len(t.split())`` for every string.

    ASCII strings (most captions) are counted on the bytes; the rest with a regex over
    Python's full whitespace set.
    """
    texts = _string_array(texts)
    runs, _ = _byte_runs(texts, _PY_ASCII_SEP)
    ascii_ = pc.string_is_ascii(texts).to_numpy(zero_copy_only=False)
    if not ascii_.all():
        other = ~ascii_
        runs[other] = pc.count_substring_regex(texts.filter(pa.array(other)), _PY_WORD_RE2).to_numpy()
    return pa.array(runs, pa.int32())


def char_count(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``len(t)``: Unicode code points."""
    return pc.utf8_length(_string_array(texts)).cast(pa.int32())


def token_count(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``len(fasttext.tokenize(t))``: runs between fastText's separator bytes, plus one
    end-of-line token per newline (UTF-8 never puts those bytes inside a character)."""
    runs, newlines = _byte_runs(_string_array(texts), _FT_SEP)
    return pa.array(runs + newlines, pa.int32())


def text_stats(uids: pa.Array, texts: pa.Array, model) -> pa.Table:
    """The ``text_stats`` rows for one batch of captions."""
    lang, score = langid.predict_languages(texts, model)
    cols = [uids, lang, score, word_count(texts), char_count(texts), token_count(texts)]
    cols = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
    return pa.Table.from_arrays(cols, schema=load_schema(TABLE).arrow())


# ---------------------------------------------------------------- per-shard task
def _source_key(samples_shard: str, model_path: str) -> str:
    # The shard's content hash, not its mtime: the key is written into the output, and the
    # same samples must give the same text_stats bytes (reruns, other machines, clusters).
    h = hashlib.sha256()
    with storage.open_input_stream(samples_shard) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{storage.basename(samples_shard)}:{h.hexdigest()}:{Path(model_path).name}:{os.path.getsize(model_path)}"


def _current_rows(out, key: str) -> int | None:
    """Rows of the committed shard ``out`` when it was made from ``key``; else None."""
    if not storage.committed(out):
        return None
    try:
        pf = storage.parquet_file(out)
    except (pa.ArrowInvalid, OSError):
        return None
    meta = pf.schema_arrow.metadata or {}
    return pf.metadata.num_rows if meta.get(_SOURCE_KEY, b"").decode() == key else None


def text_stats_task(task: dict) -> dict:
    """Compute ``text_stats`` shard i from ``samples`` shard i (skipped when already current).

    The output records which samples shard (size, mtime) and which model made it, so a
    rerun recomputes exactly the shards whose input or model changed.
    """
    ds = Dataset(task["root"])
    src = task["samples_shard"]
    out = ds.shard_path(TABLE, task["index"])
    key = _source_key(src, task["lid_model"])
    rows = None if task.get("recompute") else _current_rows(out, key)
    if rows is not None:
        return {"rows": rows, "skipped": 1}
    try:
        t = storage.read_parquet(src, columns=["uid", "text"])
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(str(src), f"cannot read columns uid, text ({e})") from e
    for name in ("uid", "text"):
        col = t.column(name)
        if col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise InputFileError(str(src), f"row {row}: column {name!r} is null")
    bad = pc.invert(pc.match_substring_regex(t.column("uid"), "^[0-9a-f]{32}$"))
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise InputFileError(str(src), f"row {row}: uid {t.column('uid')[row].as_py()!r} is not 32 lowercase hex characters")
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
    dataset.remove_temp_files(TABLE)  # a killed run's half-written parts
    results = executor.map_tasks(tasks, text_stats_task, description="text stats")
    dataset.remove_shards_beyond(TABLE, len(shards))  # a shorter samples table leaves stale shards
    return {"rows": sum(r["rows"] for r in results), "shards": len(tasks),
            "skipped_shards": sum(r["skipped"] for r in results), "lid_model": model_path}
