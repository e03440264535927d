"""The filters' per-batch decisions: ``decide(batch, params, ctx) -> Decision`` for each filter
(``DECIDE``), the rules they share, and the embedding byte layout of the filter job's frames.
Which rules, and how they follow DataComp's: ``curate.filters.stages``."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.engine import worker_cache
from curate.errors import CurateError


KEPT = "kept"


@dataclass
class Decision:
    kept: np.ndarray
    reason: np.ndarray  # object array of str
    value: np.ndarray  # float64, NaN -> null
    detail: np.ndarray  # object array of str | None
    rules: Counter  # rows failing each rule (all failures, not only the first)

    def arrays(self) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
        return (pa.array(self.kept, pa.bool_()), pa.array(self.reason, pa.string()),
                pa.array(self.value, pa.float64(), mask=np.isnan(self.value)),
                pa.array(self.detail, pa.string()))


def _first_failure(n: int, rules: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]],
                   kept_value: np.ndarray | None = None, kept_detail: np.ndarray | None = None) -> Decision:
    """Each row's reason is the first rule (in order) whose mask is true; else 'kept'."""
    reason = np.full(n, KEPT, dtype=object)
    value = np.full(n, np.nan) if kept_value is None else np.asarray(kept_value, dtype=np.float64).copy()
    detail = np.full(n, None, dtype=object) if kept_detail is None else np.asarray(kept_detail, dtype=object).copy()
    decided = np.zeros(n, dtype=bool)
    counts: Counter = Counter()
    for name, mask, val, det in rules:
        mask = np.asarray(mask, dtype=bool)
        counts[name] += int(mask.sum())
        m = mask & ~decided
        reason[m] = name
        value[m] = np.nan if val is None else np.asarray(val, dtype=np.float64)[m]
        detail[m] = None if det is None else np.asarray(det, dtype=object)[m]
        decided |= m
    return Decision(~decided, reason, value, detail, counts)


def _f64(col) -> np.ndarray:
    """Numeric column as float64 with NaN for nulls."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)


def _obj(col) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)


def _is(col, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(col, value), False).to_numpy(zero_copy_only=False).astype(bool)


def _lang_reason(lang: str) -> str:
    return "not_english" if lang == "en" else f"not_{lang}"


def _size_detail(t: pa.Table, rows: np.ndarray) -> np.ndarray:
    """'WxH' ('?' for a missing side) at ``rows``, None elsewhere (built only where needed)."""
    out = np.full(t.num_rows, None, dtype=object)
    if rows.any():
        sel = pa.array(rows)
        w = pc.cast(t.column("original_width").filter(sel), pa.string()).fill_null("?")
        h = pc.cast(t.column("original_height").filter(sel), pa.string()).fill_null("?")
        out[rows] = _obj(pc.binary_join_element_wise(w, h, "x"))
    return out


def decide_basic(t: pa.Table, p: dict, ctx: dict) -> Decision:
    n = t.num_rows
    lang_ok = _is(t.column("language"), p["lang"])
    words = _f64(t.column("word_count"))
    chars = _f64(t.column("char_count"))
    w, h = _f64(t.column("original_width")), _f64(t.column("original_height"))
    lo, hi = np.minimum(w, h), np.maximum(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = hi / lo  # DataComp's float division: 0 -> inf, 0/0 -> nan, both fail
    missing, small, wide = np.isnan(w) | np.isnan(h), ~(lo >= p["min_side"]), ~(aspect <= p["max_aspect"])
    size = _size_detail(t, missing | small | wide)
    lang_score, lang = _f64(t.column("language_score")), _obj(t.column("language"))
    rules = [
        (_lang_reason(p["lang"]), ~lang_ok, lang_score, lang),
        ("too_few_words", words < p["min_words"], words, None),
        ("too_few_chars", chars < p["min_chars"], chars, None),
        ("missing_size", missing, None, size),
        ("image_too_small", small, lo, size),
        ("bad_aspect_ratio", wide, aspect, size),
    ]
    return _first_failure(n, rules, kept_value=lang_score, kept_detail=lang)


def at_least(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``scores >= threshold`` in the scores' stored precision (float32), as DataComp compares
    (a float32 pandas column against a Python float): float32(0.22) = 0.2199999988 passes a
    threshold of 0.22. NaN never passes."""
    s = np.asarray(scores, dtype=np.float32)
    return s >= np.float32(threshold)


def _f32(col) -> np.ndarray:
    """A stored score column as float32 with NaN for nulls (no widening before a comparison)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col.cast(pa.float32()).fill_null(math.nan).to_numpy(zero_copy_only=False)


def _score_rules(t: pa.Table, ctx: dict, threshold: float) -> tuple[np.ndarray, list]:
    col = t.column(ctx["score_column"])
    missing = col.is_null().to_numpy(zero_copy_only=False).astype(bool)
    s = _f32(col)
    return s, [("no_embedding", missing, None, None),
               ("low_clip_score", ~missing & ~at_least(s, threshold), s, None)]


def decide_clip_score(t: pa.Table, p: dict, ctx: dict) -> Decision:
    s, rules = _score_rules(t, ctx, ctx["threshold"])
    return _first_failure(t.num_rows, rules, kept_value=s)


def decide_laion2b(t: pa.Table, p: dict, ctx: dict) -> Decision:
    s, (missing, low) = _score_rules(t, ctx, p["threshold"])
    if p["lang_id"] == "gcld3":
        from curate.filters.langid import predict_gcld3

        labels, probs = predict_gcld3(t.column("text"))
    else:
        labels, probs = t.column("language"), t.column("language_score")
    lang = (_lang_reason(p["lang"]), ~_is(labels, p["lang"]), _f64(probs), _obj(labels))
    return _first_failure(t.num_rows, [missing, lang, low], kept_value=s)


def embeddings_from_binary(col) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, float32 matrix of the valid rows) from raw float16 bytes per row."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    if not valid.any():
        return valid, np.zeros((0, 0), dtype=np.float32)
    col = col.cast(pa.binary())
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset: col.offset + len(col) + 1]
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    lengths = np.diff(offsets)[valid]
    if lengths.min() != lengths.max():
        raise CurateError(f"image embeddings of different sizes in one batch ({lengths.min()} vs {lengths.max()} bytes)")
    d = int(lengths[0]) // 2
    return valid, data.view(np.float16).reshape(-1, d).astype(np.float32)


def embeddings_to_binary(col) -> pa.Array:
    """fixed_size_list<float16> -> binary of the raw float16 bytes (Spark has neither type)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n, d = len(col), col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False)
    data = pa.py_buffer(np.ascontiguousarray(flat).tobytes())
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * (2 * d)).tobytes())
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, data])


def _centroids(path: str, sha256: str) -> np.ndarray:
    """The run's centroids, read once per worker (keyed by their content: no store request per batch)."""
    from curate import storage

    return worker_cache(("filters-centroids", path, sha256), lambda: storage.load_npy(path).astype(np.float32))


def assign_clusters(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid by largest dot product (DataComp's argmax of x @ c.T)."""
    from curate.embedding_space.kmeans import assign

    ids, _ = assign(x, centroids, metric="ip")
    return ids


def caption_rules(t: pa.Table, p: dict) -> list:
    """DataComp's caption filter for the image-based baseline (and its k-means input)."""
    return [
        (_lang_reason(p["lang"]), ~_is(t.column("language"), p["lang"]),
         _f64(t.column("language_score")), _obj(t.column("language"))),
        ("too_few_tokens", _f64(t.column("token_count")) < p["min_tokens"], _f64(t.column("token_count")), None),
        ("too_few_chars", _f64(t.column("char_count")) < p["min_chars"], _f64(t.column("char_count")), None),
    ]


def decide_image_based(t: pa.Table, p: dict, ctx: dict) -> Decision:
    n = t.num_rows
    valid, x = embeddings_from_binary(t.column(ctx["embedding_column"]))
    rules = [("no_embedding", ~valid, None, None)]
    if ctx.get("score_column"):
        s = _f32(t.column(ctx["score_column"]))
        rules.append(("low_clip_score", valid & ~at_least(s, ctx["threshold"]), s, None))
    rules += caption_rules(t, p)
    # Only rows that pass every earlier rule are assigned to a cluster (as DataComp does: the
    # CLIP cut and the caption filter first), which is most of the cost saved on a strict cut.
    reach = valid.copy()
    for _, mask, _, _ in rules[1:]:
        reach &= ~np.asarray(mask, dtype=bool)
    cluster = np.full(n, np.nan)
    in_target = np.zeros(n, dtype=bool)
    if reach.any():
        ids = assign_clusters(x[reach[valid]], _centroids(ctx["centroids_path"], ctx["centroids_sha256"]))
        cluster[reach] = ids
        in_target[reach] = np.isin(ids, np.asarray(ctx["target_clusters"], dtype=np.int64))
    rules.append(("cluster_without_target", reach & ~in_target, cluster, None))
    return _first_failure(n, rules, kept_value=cluster)


# ---- text_based
def _entity_lookup(wordnet_dir: str | None):
    """word -> offset of its first WordNet synset (or -1), memoised per worker."""
    from curate.wordnet import get_wordnet

    wn = get_wordnet(wordnet_dir)
    memo: dict[str, int] = {}

    def first_offset(word: str) -> int:
        off = memo.get(word)
        if off is None:
            ss = wn.synsets(word)
            off = ss[0].offset() if ss else -1
            if len(memo) < 2_000_000:
                memo[word] = off
        return off

    return first_offset


def decide_text_based(t: pa.Table, p: dict, ctx: dict) -> Decision:
    n = t.num_rows
    lang_ok = _is(t.column("language"), p["lang"])
    first_offset = worker_cache(("filters-wordnet", p["wordnet_dir"]), lambda: _entity_lookup(p["wordnet_dir"]))
    targets = frozenset(ctx["target_offsets"])
    matched = np.zeros(n, dtype=bool)
    value = np.full(n, np.nan)
    detail = np.full(n, None, dtype=object)
    texts = t.column("text").to_pylist()
    for i in np.flatnonzero(lang_ok):  # the decision needs the match only where the language passed
        for word in texts[i].split():
            off = first_offset(word)
            if off in targets:  # DataComp compares the offset only, whatever the part of speech
                matched[i], value[i], detail[i] = True, off, word
                break
    rules = [
        (_lang_reason(p["lang"]), ~lang_ok, _f64(t.column("language_score")), _obj(t.column("language"))),
        ("no_target_synset", lang_ok & ~matched, None, None),
    ]
    return _first_failure(n, rules, kept_value=value, kept_detail=detail)


DECIDE = {
    "basic": decide_basic,
    "clip_score": decide_clip_score,
    "laion2b": decide_laion2b,
    "image_based": decide_image_based,
    "text_based": decide_text_based,
}


def read_synset_offsets(path: str, wordnet_dir: str | None = None) -> list[int]:
    """Target offsets from a file: wnids (n01440764), bare offsets, or synset names (dog.n.01)."""
    from pathlib import Path

    from curate.errors import InputFileError

    p = Path(path)
    if not p.is_file():
        raise InputFileError(str(p), "synset list not found")
    out = []
    wn = None
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if len(s) > 1 and s[0] in "nvarsNVARS" and s[1:].isdigit():
            out.append(int(s[1:]))  # DataComp: int(x[1:])
        elif s.isdigit():
            out.append(int(s))
        elif s.count(".") >= 2:
            if wn is None:
                from curate.wordnet import get_wordnet

                wn = get_wordnet(wordnet_dir)
            try:
                out.append(wn.synset(s).offset())
            except Exception as e:  # nltk raises WordNetError / ValueError for unknown names
                raise InputFileError(str(p), f"line {lineno}: unknown synset {s!r} ({e})") from e
        else:
            raise InputFileError(str(p), f"line {lineno}: {s!r} is not a WordNet id (n01440764), "
                                 "an offset or a synset name (dog.n.01)")
    if not out:
        raise InputFileError(str(p), "no synsets in the list")
    return sorted(set(out))
