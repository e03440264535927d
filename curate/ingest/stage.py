"""The per-batch ingest stage: validate and normalise raw rows, assign uids.

Plain functions over Arrow batches; no Spark here. ``prepare_batch`` turns a reader's raw
batch into a "staged" batch where every row is either a sample or a reject with a reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from curate.readers import RAW_SCHEMA, REJECT_REASONS, ReaderOptions, read_file_raw
from curate.readers.base import clip_raw
from curate.text import normalize_text
from curate.uid import derive_uids

STAGED_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),  # sample | reject
    pa.field("uid", pa.string()),
    pa.field("url", pa.string()),
    pa.field("text", pa.string()),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("extra", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("raw", pa.string()),
    pa.field("file_index", pa.int32(), nullable=False),
    # Hash of the (url, text) pair (the derived uid): exact-duplicate detection compares
    # these 128-bit keys instead of shuffling whole captions.
    pa.field("pair_key", pa.string()),
])


_CONTROL_CHARS = r"[\x{00}-\x{1f}\x{7f}-\x{9f}]"
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass(frozen=True)
class IngestRules:
    """Limits a row must meet to become a sample (the CLI options take their defaults from here)."""

    max_text_chars: int = 100_000
    max_url_chars: int = 4096
    max_size: int = 1 << 20  # a stated width/height above this is not a real image size
    # Faithful mode (default for DataComp input): captions stored as given, stated sizes kept
    # whatever they are (the filters judge them), rows with distinct input uids never merged.
    # Differences from the default mode are listed in docs/filters.md (Faithful mode).
    faithful: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _mark(reason, detail, cond, code, message):
    """Set reason/detail where ``cond`` holds and no earlier reason was set."""
    cond = pc.fill_null(cond, False)
    new = pc.and_(cond, pc.is_null(reason))
    if not pc.any(new).as_py():
        return reason, detail
    return pc.if_else(new, code, reason), pc.if_else(new, message, detail)


def _reject_reasons(raw: pa.RecordBatch, url: pa.Array, has_uid: pa.Array, uid_norm: pa.Array,
                    rules: IngestRules) -> tuple[pa.Array, pa.Array]:
    """Each row's reject reason and detail (null: a sample): the reader's own, else the first
    rule here it fails, in this order."""
    reason = raw.column("reason")
    detail = raw.column("detail")
    text_in = raw.column("text")
    reason, detail = _mark(reason, detail, pc.or_kleene(pc.is_null(url), pc.equal(pc.utf8_length(url), 0)),
                           "empty_url", "url is empty or missing")
    reason, detail = _mark(reason, detail, pc.greater(pc.utf8_length(url), rules.max_url_chars),
                           "url_too_long", f"url longer than {rules.max_url_chars} characters (raise --max-url-chars)")
    # NUL, tab, newline, DEL, C1 controls: no client sends them, and they break what reads urls later
    reason, detail = _mark(reason, detail, pc.match_substring_regex(url, _CONTROL_CHARS),
                           "url_control_character", "url contains a control character (NUL, tab, newline, DEL...)")
    reason, detail = _mark(reason, detail, pc.is_null(text_in), "missing_text", "caption is missing (null)")
    reason, detail = _mark(reason, detail, pc.greater(pc.utf8_length(pc.fill_null(text_in, "")), rules.max_text_chars),
                           "text_too_long", f"caption longer than {rules.max_text_chars} characters")
    uid_ok = pc.match_substring_regex(uid_norm, r"^[0-9a-f]{32}$")
    reason, detail = _mark(reason, detail, pc.and_(has_uid, pc.invert(pc.fill_null(uid_ok, False))),
                           "invalid_uid", "uid is not 32 hex characters")
    w, h = raw.column("original_width"), raw.column("original_height")
    if rules.faithful:  # any stated size is kept for the filters to judge; only int32 bounds it
        bad_size = pc.or_kleene(pc.or_kleene(pc.less(w, _INT32_MIN), pc.less(h, _INT32_MIN)),
                                pc.or_kleene(pc.greater(w, _INT32_MAX), pc.greater(h, _INT32_MAX)))
        return _mark(reason, detail, bad_size, "invalid_size", "stated width/height does not fit in 32 bits")
    bad_size = pc.or_kleene(pc.or_kleene(pc.less_equal(w, 0), pc.less_equal(h, 0)),
                            pc.or_kleene(pc.greater(w, rules.max_size), pc.greater(h, rules.max_size)))
    return _mark(reason, detail, bad_size, "invalid_size", "stated width/height is not a positive image size")


def prepare_batch(raw: pa.RecordBatch, source_file: str, file_index: int,
                  rules: IngestRules = IngestRules()) -> tuple[pa.RecordBatch, Counter]:
    """Raw reader rows -> staged rows (samples or rejects) and counts by outcome."""
    n = raw.num_rows
    url_in = raw.column("url")
    url = pc.utf8_trim_whitespace(url_in)
    text_in = raw.column("text")
    given_uid = raw.column("uid")
    has_uid = pc.is_valid(given_uid)
    uid_norm = pc.utf8_lower(pc.utf8_trim_whitespace(given_uid))
    w, h = raw.column("original_width"), raw.column("original_height")
    reason, detail = _reject_reasons(raw, url, has_uid, uid_norm, rules)
    unknown = set(pc.unique(reason).drop_null().to_pylist()) - REJECT_REASONS.keys()
    if unknown:  # every reason must be documented (REJECT_REASONS, schemas/rejects.yaml)
        raise ValueError(f"unregistered reject reason(s) {sorted(unknown)}")
    is_sample = pc.is_null(reason)
    # Long captions are only normalised when kept; rejected ones keep their raw form.
    text = normalize_text(pc.if_else(is_sample, text_in, pa.scalar(None, pa.string())))
    derived = _derive(url, text, is_sample)  # the normalised pair names a sample without an input uid
    if rules.faithful:  # the caption and url as given: the filters judge what DataComp judges
        text = pc.if_else(is_sample, text_in, pa.scalar(None, pa.string()))
        url = url_in
    uid = pc.if_else(pc.and_(is_sample, has_uid), uid_norm, derived)
    raw_out = _reject_raw(raw, is_sample)
    kind = pc.if_else(is_sample, "sample", "reject")
    staged = pa.RecordBatch.from_arrays([
        kind,
        pc.if_else(is_sample, uid, pa.scalar(None, pa.string())),
        pc.if_else(is_sample, url, pa.scalar(None, pa.string())),
        text,
        pa.array([source_file] * n, pa.string()),
        raw.column("source_row"),
        pc.if_else(is_sample, w, pa.scalar(None, pa.int64())).cast(pa.int32()),
        pc.if_else(is_sample, h, pa.scalar(None, pa.int64())).cast(pa.int32()),
        pc.if_else(is_sample, raw.column("extra"), pa.scalar(None, pa.string())),
        reason,
        detail,
        raw_out,
        pa.array([file_index] * n, pa.int32()),
        derived,
    ], schema=STAGED_SCHEMA)
    counts = Counter({"rows": n, "samples": pc.sum(is_sample.cast(pa.int64())).as_py() or 0})
    counts["rejects"] = n - counts["samples"]
    return staged, counts


def _reject_raw(raw: pa.RecordBatch, is_sample: pa.Array) -> pa.Array:
    """The raw value each reject shows: the reader's (the record as read), else, for a reason
    decided here, the row's fields as JSON (url, caption, uid, sizes: whichever the rule
    judged is among them), cut to the rejects table's bound. Null for samples."""
    raw_col = raw.column("raw")
    todo = pc.and_(pc.invert(is_sample), pc.is_null(raw_col))
    if pc.any(todo).as_py():
        fields = {"url": "url", "text": "caption", "uid": "uid", "original_width": "width",
                  "original_height": "height"}
        rows = raw.select(list(fields)).filter(todo).to_pylist()
        shown = [clip_raw(json.dumps({fields[k]: v for k, v in r.items() if v is not None}, ensure_ascii=False))
                 for r in rows]
        raw_col = pc.replace_with_mask(raw_col, todo, pa.array(shown, pa.string()))
    return pc.if_else(is_sample, pa.scalar(None, pa.string()), raw_col)


def _derive(url: pa.Array, text: pa.Array, mask: pa.Array) -> pa.Array:
    idx = pc.indices_nonzero(mask)
    if len(idx) == 0:
        return pa.nulls(len(url), pa.string())
    sub = derive_uids(pc.take(url, idx).to_pylist(), pc.take(text, idx).to_pylist())
    if len(idx) == len(url):
        return sub
    return pc.replace_with_mask(pa.nulls(len(url), pa.string()), mask, sub)


def ingest_task_batches(task: dict) -> Iterator[pa.RecordBatch]:
    """Staged batches for one ingest task (a file, a row-group slice of one, or a slice of an
    image folder's rows)."""
    options = ReaderOptions.from_dict(task["options"])
    rules = IngestRules(**task.get("rules", {}))
    slice_args = {}
    if task.get("row_groups") is not None:
        slice_args = {"row_groups": task["row_groups"], "first_row": task["first_row"]}
    if task.get("rows") is not None:  # an image folder's slice
        slice_args = {"rows": tuple(task["rows"])}
    from curate import storage

    # the driver's copy of an input named by URI, or on a cluster worker this machine's own
    for raw in read_file_raw(storage.local_input(task["path"], task["source"]), options, task["format"], **slice_args):
        staged, _ = prepare_batch(raw, task["source"], task["file_index"], rules)
        yield staged
