"""MetaCLIP balancing: cap each metadata entry at about t texts.

With ``count_e`` the number of pool texts matching entry e, the entry's sampling
probability is ``p_e = 1`` if ``count_e < t`` else ``t / count_e``. A text is kept when,
for at least one of its entries, its uniform draw is below ``p_e``, so
``P(keep) = 1 - prod_e (1 - p_e)``; a text matching no entry is dropped. Tail entries
(count < t) keep all their texts, head entries keep about t each.

MetaCLIP draws with ``random.random()``; here the draw for (text, entry) is a hash of
(seed, uid, entry id) mapped to [0, 1), so the subset is the same whatever the sharding,
partitioning, executor count or rerun. The hash is SplitMix64's finaliser chained over the
four 64-bit words (seed, uid high, uid low, entry id), vectorised with NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_T = 20_000

REASON_KEPT = "kept"
REASON_NO_MATCH = "no_metadata_match"
REASON_BALANCED_OUT = "balanced_out"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def entry_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """``p_e = 1`` if ``count_e < t`` else ``t / count_e`` (float64)."""
    if t <= 0:
        raise ValueError(f"t must be positive, got {t}")
    c = np.asarray(counts, dtype=np.float64)
    p = np.ones_like(c)
    head = c >= t
    p[head] = t / c[head]
    return p


def scaled_t(t: float, pool_size: int, reference_pool: int | None) -> float:
    """t scaled linearly from a reference pool size to this pool (t as is without a reference)."""
    if not reference_pool:
        return float(t)
    if reference_pool < 0:
        raise ValueError(f"reference pool size must be positive, got {reference_pool}")
    return float(t) * pool_size / reference_pool


def _mix(z: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser; uint64 array arithmetic wraps modulo 2**64 as intended.
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uid_words(uids: pa.Array | pa.ChunkedArray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """High and low 64-bit words of 32-hex-char uids (DataComp's u8,u8 split)."""
    values = uids.to_pylist() if isinstance(uids, (pa.Array, pa.ChunkedArray)) else list(uids)
    if not values:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    raw = bytes.fromhex("".join(values))
    if len(raw) != 16 * len(values):
        raise ValueError("uids must be 32 hex characters each")
    words = np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)
    return words[:, 0].copy(), words[:, 1].copy()


def uniform_draws(seed: int, uid_hi: np.ndarray, uid_lo: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) draw for each (uid, entry id) pair, a pure function of (seed, uid, entry id)."""
    h = np.full(len(entry_ids), (int(seed) & _MASK64), dtype=np.uint64)
    h = _mix(h + _GOLDEN)
    h = _mix((h ^ uid_hi.astype(np.uint64, copy=False)) + _GOLDEN)
    h = _mix((h ^ uid_lo.astype(np.uint64, copy=False)) + _GOLDEN)
    h = _mix((h ^ entry_ids.astype(np.uint64)) + _GOLDEN)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class BalanceResult:
    kept: np.ndarray  # bool per text
    p_keep: np.ndarray  # 1 - prod(1 - p_e) per text (0 without matches)
    first_entry: np.ndarray  # smallest entry id whose draw kept the text, -1 when dropped
    num_entries: np.ndarray  # matched entries per text
    kept_entry_counts: np.ndarray  # per entry: kept texts matching it (length = len(probs))


def balance_matches(uids: pa.Array | pa.ChunkedArray, entry_ids: pa.Array | pa.ChunkedArray,
                    probs: np.ndarray, seed: int) -> BalanceResult:
    """Balance one batch of (uid, sorted entry ids) rows against entry probabilities."""
    if isinstance(entry_ids, pa.ChunkedArray):
        entry_ids = entry_ids.combine_chunks()
    n = len(entry_ids)
    lengths = pc.fill_null(pc.list_value_length(entry_ids), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(entry_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(flat) and (flat.min() < 0 or flat.max() >= len(probs)):
        bad = int(flat.max()) if flat.max() >= len(probs) else int(flat.min())
        raise ValueError(f"entry id {bad} is outside the metadata (0..{len(probs) - 1})")
    row = np.repeat(np.arange(n, dtype=np.int64), lengths)
    hi, lo = uid_words(uids)
    u = uniform_draws(seed, hi[row], lo[row], flat)
    p = probs[flat]
    hit = u < p
    kept = np.bincount(row[hit], minlength=n) > 0
    with np.errstate(divide="ignore"):
        log_miss = np.bincount(row, weights=np.log1p(-p), minlength=n)
    p_keep = np.where(lengths > 0, -np.expm1(log_miss), 0.0)
    first_entry = np.full(n, -1, dtype=np.int64)
    hit_rows = row[hit]
    if len(hit_rows):
        rows_u, first_idx = np.unique(hit_rows, return_index=True)  # flat is sorted within a row
        first_entry[rows_u] = flat[hit][first_idx]
    kept_entry_counts = np.bincount(flat[kept[row]], minlength=len(probs)).astype(np.int64)
    return BalanceResult(kept, p_keep, first_entry, lengths, kept_entry_counts)


def decision_reasons(result: BalanceResult) -> np.ndarray:
    reasons = np.where(result.kept, REASON_KEPT, REASON_BALANCED_OUT).astype(object)
    reasons[result.num_entries == 0] = REASON_NO_MATCH
    return reasons
