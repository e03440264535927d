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

DEFAULT_BAND_BITS = 16      # at most 65,536 values a band
MAX_PROBES = 4096           # query entries a row may emit per band (C(16, 0..2) = 137)
MAX_BAND_BITS = 32
BLOCK_PAIRS = 1 << 22       # candidate pairs checked at once inside a partition
BUCKET_SHIFT = 40           # bucket key = band << 40 | band value
ENTRIES_PER_PART = 2_000_000  # bucket entries a partition (one grouped-apply group) holds, about


def default_bands(bits: int, radius: int) -> int:
    """Bands of at most 16 bits, and enough of them that the band radius is 0 or 1 (a row then
    emits 1 + width entries a band, not C(width, 2) more)."""
    return min(bits, max(-(-bits // DEFAULT_BAND_BITS), -(-(radius + 1) // 2)))


def band_plan(bits: int, radius: int, bands: int | None = None) -> tuple[list[tuple[int, int]], int]:
    """[(shift, width)] of each band (widths differ by at most one bit) and the band radius ``s``."""
    if radius < 0 or radius > bits:
        raise DatasetError(f"--radius must be in [0, {bits}] for a {bits}-bit hash, got {radius}")
    m = bands if bands is not None else default_bands(bits, radius)
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


def entries_per_row(plan: list[tuple[int, int]], s: int) -> int:
    return sum(sum(_comb(w, k) for k in range(s + 1)) for _, w in plan)


def partitions(rows: int, plan: list[tuple[int, int]], s: int) -> int:
    """Groups the buckets are spread over: about ENTRIES_PER_PART entries each (a function of
    the input size only, so every engine makes the same groups)."""
    return max(1, -(-rows * entries_per_row(plan, s) // ENTRIES_PER_PART))


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


BUCKET_ROWS = pa.schema([("part", pa.int64()), ("bucket", pa.int64()), ("uid", pa.string()),
                         ("hash", pa.int64()), ("index", pa.bool_())])
LINKS = pa.schema([("uid", pa.string()), ("root", pa.string())])


def bucket_entries(uids: pa.Array, hashes: np.ndarray, plan: list[tuple[int, int]], s: int,
                   parts: int = 1) -> pa.RecordBatch:
    """One row per (row, band, probe): the partition and bucket keys, the uid, the full hash (as
    int64, the same 64 bits) and whether it is the row's own band value (an index entry)."""
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
    key = np.concatenate(keys)
    with np.errstate(over="ignore"):  # a multiplicative hash spreads neighbouring bucket keys
        part = ((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)) % np.uint64(parts)
    return pa.record_batch([pa.array(part.astype(np.int64)), pa.array(key.view(np.int64)), uids.take(pa.array(r)),
                            pa.array(h.view(np.int64)[r]), pa.array(np.concatenate(index))], schema=BUCKET_ROWS)


def bucket_links(group: pa.Table, radius: int, block_pairs: int = BLOCK_PAIRS) -> pa.Table:
    """(uid, root) for every row of a partition of buckets that has a partner within ``radius``
    in one of them; root = the smallest uid of its component within the partition. Vectorised
    over all the partition's buckets; independent of the order rows arrive in."""
    if group.num_rows < 2:
        return LINKS.empty_table()
    import pyarrow.compute as pc

    uid = group.column("uid")
    nodes = pc.unique(uid)
    nodes = nodes.take(pc.array_sort_indices(nodes))      # sorted: node index order = uid order
    node = pc.index_in(uid, value_set=nodes).to_numpy().astype(np.int64)
    bucket = group.column("bucket").to_numpy()
    h = group.column("hash").to_numpy().view(np.uint64)
    is_index = group.column("index").to_numpy(zero_copy_only=False)
    # identical hashes are one node of the search (distance 0 links them directly)
    hu, hinv = np.unique(h, return_inverse=True)
    o = np.lexsort((node, hinv))                           # smallest node of each distinct hash
    hnode = node[o][np.flatnonzero(np.r_[True, hinv[o][1:] != hinv[o][:-1]])]
    a, b = [node], [hnode[hinv]]
    # one entry per (bucket, distinct hash); an index entry if any of its rows is one
    order = np.lexsort((h, bucket))
    kb, kh = bucket[order], h[order]
    first = np.r_[True, (kb[1:] != kb[:-1]) | (kh[1:] != kh[:-1])]
    rb, rh = kb[first], kh[first]
    rnode = hnode[np.searchsorted(hu, rh)]
    ridx = np.logical_or.reduceat(is_index[order], np.flatnonzero(first))
    bstart = np.flatnonzero(np.r_[True, rb[1:] != rb[:-1]])
    bsize = np.diff(np.r_[bstart, len(rb)])
    seg = np.repeat(np.arange(len(bstart)), bsize)
    q = np.flatnonzero(ridx)               # every index entry meets every entry of its bucket
    cnt = bsize[seg[q]]
    ends = np.cumsum(cnt)
    lo = 0
    while lo < len(q):
        hi = max(lo + 1, int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + block_pairs, side="right")))
        qi = np.repeat(q[lo:hi], cnt[lo:hi])
        start = np.repeat(ends[lo:hi] - cnt[lo:hi], cnt[lo:hi])
        partner = bstart[seg[qi]] + (np.arange(len(qi)) + (ends[lo - 1] if lo else 0) - start)
        ok = (qi != partner) & (popcount(rh[qi] ^ rh[partner]) <= radius)
        a.append(rnode[qi[ok]])
        b.append(rnode[partner[ok]])
        lo = hi
    labels = connected_components(len(nodes), np.concatenate(a), np.concatenate(b))
    member = np.flatnonzero(np.bincount(labels, minlength=len(nodes))[labels] > 1)
    return pa.table({"uid": nodes.take(pa.array(member)), "root": nodes.take(pa.array(labels[member]))}, schema=LINKS)


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
