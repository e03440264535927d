"""Groups of images whose perceptual hashes are within a Hamming radius, found without
comparing all pairs: a multi-index over bands of the hash (Norouzi et al., "Fast search in
Hamming space with multi-index hashing", 2012).

The ``bits``-bit hash is cut into ``m`` bands. If two hashes differ in at most ``r`` bits,
some band differs in at most ``s = r // m`` bits (pigeonhole). Every row is therefore put in
one bucket per band and per probe: the band's own value ("index" entry) and each value within
``s`` flipped bits of it ("query" entries; none when ``s == 0``, where it is plain
pigeonhole over ``m >= r + 1`` bands). Any pair within ``r`` meets in at least one bucket
where one of them is an index entry, so comparing, inside each bucket, every row with the
bucket's index entries finds every pair (no false negatives) and only checks pairs that
share a band closely. Each pair found is checked on the full hash, so there are no false
positives either.

Inside a bucket, rows with identical hashes are merged first (so a bucket of many copies of
one blank image costs one comparison), the remaining distinct hashes are compared in blocks,
and the bucket's pairs are joined into local components (union-find); the bucket returns
each member of a component of two or more rows with the component's smallest uid.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pyarrow as pa

from curate.embedding_space.duplicates import connected_components
from curate.errors import DatasetError

DEFAULT_BAND_BITS = 16      # 65,536 values a band: buckets stay small up to millions of rows
MAX_PROBES = 4096           # query entries a row may emit per band (C(16, 0..2) = 137)
MAX_BAND_BITS = 32
BLOCK_CELLS = 1 << 22       # distance-matrix cells computed at once inside a bucket
BUCKET_SHIFT = 40           # bucket key = band << 40 | band value


def band_plan(bits: int, radius: int, bands: int | None = None) -> tuple[list[tuple[int, int]], int]:
    """[(shift, width)] of each band (widths differ by at most one bit) and the band radius ``s``."""
    if radius < 0 or radius > bits:
        raise DatasetError(f"--radius must be in [0, {bits}] for a {bits}-bit hash, got {radius}")
    m = bands if bands is not None else max(1, -(-bits // DEFAULT_BAND_BITS))
    if m < 1 or m > bits:
        raise DatasetError(f"--bands must be in [1, {bits}], got {m}")
    widths = [bits // m + (1 if i < bits % m else 0) for i in range(m)]
    if max(widths) > MAX_BAND_BITS:
        raise DatasetError(f"{m} bands of a {bits}-bit hash are wider than {MAX_BAND_BITS} bits; use --bands "
                           f"{-(-bits // MAX_BAND_BITS)} or more")
    s = radius // m
    probes = sum(_comb(max(widths), k) for k in range(s + 1))
    if probes > MAX_PROBES:
        raise DatasetError(f"radius {radius} over {m} bands means {probes} probes per band (more than "
                           f"{MAX_PROBES}); use more bands (--bands {radius + 1} makes it plain pigeonhole)")
    plan, shift = [], bits
    for w in widths:
        shift -= w
        plan.append((shift, w))
    return plan, s


def _comb(n: int, k: int) -> int:
    from math import comb

    return comb(n, k)


def flip_masks(width: int, s: int) -> np.ndarray:
    """Every mask of ``width`` bits with at most ``s`` bits set (0 first)."""
    out = [0]
    for k in range(1, s + 1):
        out += [sum(1 << b for b in c) for c in combinations(range(width), k)]
    return np.asarray(out, dtype=np.uint64)


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.asarray(x, dtype=np.uint64)).astype(np.int64)


BUCKET_ROWS = pa.schema([("bucket", pa.int64()), ("uid", pa.string()), ("hash", pa.int64()),
                         ("index", pa.bool_())])
LINKS = pa.schema([("uid", pa.string()), ("root", pa.string())])


def bucket_entries(uids: pa.Array, hashes: np.ndarray, plan: list[tuple[int, int]], s: int) -> pa.RecordBatch:
    """One row per (row, band, probe): the bucket key, the uid, the full hash (as int64, the
    same 64 bits) and whether it is the row's own band value (an index entry)."""
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if not n:
        return pa.record_batch([pa.array([], f.type) for f in BUCKET_ROWS], schema=BUCKET_ROWS)
    keys, rows, index = [], [], []
    for j, (shift, w) in enumerate(plan):
        band = (h >> np.uint64(shift)) & np.uint64((1 << w) - 1)
        masks = flip_masks(w, s)
        probe = (band[:, None] ^ masks[None, :]).ravel()  # row-major: each row's probes together
        keys.append((np.uint64(j) << np.uint64(BUCKET_SHIFT)) | probe)
        rows.append(np.repeat(np.arange(n), len(masks)))
        index.append(np.tile(masks == 0, n))
    r = np.concatenate(rows)
    return pa.record_batch([pa.array(np.concatenate(keys).view(np.int64)), uids.take(pa.array(r)),
                            pa.array(h.view(np.int64)[r]), pa.array(np.concatenate(index))], schema=BUCKET_ROWS)


def bucket_links(group: pa.Table, radius: int, block_cells: int = BLOCK_CELLS) -> pa.Table:
    """(uid, root) for every row of a bucket that has a partner within ``radius`` there; root
    = the smallest uid of its local component. Independent of the order rows arrive in."""
    if group.num_rows < 2:
        return LINKS.empty_table()
    uids = np.asarray(group.column("uid").to_pylist(), dtype=object)
    h = group.column("hash").to_numpy().view(np.uint64)
    is_index = group.column("index").to_numpy(zero_copy_only=False)
    if not is_index.any():
        return LINKS.empty_table()
    uh, inv = np.unique(h, return_inverse=True)          # distinct hashes; identical rows share one
    ui = np.unique(h[is_index])                          # distinct hashes with an index entry here
    a, b = [], []
    step = max(1, block_cells // max(1, len(ui)))
    for start in range(0, len(uh), step):
        d = popcount(uh[start:start + step, None] ^ ui[None, :])
        qa, ib = np.nonzero(d <= radius)
        a.append(start + qa)
        b.append(np.searchsorted(uh, ui[ib]))
    a, b = np.concatenate(a), np.concatenate(b)
    keep = a != b
    # hash-level components, then rows: identical hashes are one node
    hl = connected_components(len(uh), a[keep], b[keep])
    row_label = hl[inv]
    sizes = np.bincount(row_label, minlength=len(uh))
    member = sizes[row_label] > 1
    if not member.any():
        return LINKS.empty_table()
    order = np.lexsort((uids.astype(str), row_label))     # smallest uid first within each label
    first_of = {}
    for i in order:
        first_of.setdefault(row_label[i], uids[i])
    idx = np.flatnonzero(member)
    return pa.table({"uid": pa.array(uids[idx].tolist(), pa.string()),
                     "root": pa.array([first_of[row_label[i]] for i in idx], pa.string())}, schema=LINKS)


def merge_links(links: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Connected components across buckets: (uids, component) with component = index (into the
    sorted uids) of the component's smallest uid. Order-independent, so every engine agrees."""
    if links.num_rows == 0:
        return np.zeros(0, dtype=object), np.zeros(0, np.int64)
    both = np.concatenate([np.asarray(links.column("uid").to_pylist(), dtype=object),
                           np.asarray(links.column("root").to_pylist(), dtype=object)]).astype(str)
    nodes, inv = np.unique(both, return_inverse=True)
    n = links.num_rows
    labels = connected_components(len(nodes), inv[:n], inv[n:])
    return nodes, labels.astype(np.int64)


def survivor_order(uids: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """Row order of a group, survivor first: highest score (NaN = no score, ranked last), then
    smallest uid."""
    u = np.asarray(uids).astype(str)
    if scores is None:
        return np.argsort(u, kind="stable")
    sc = np.asarray(scores, dtype=np.float64)
    has = ~np.isnan(sc)
    return np.lexsort((u, np.where(has, -sc, 0.0), ~has))
