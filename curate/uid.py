"""Sample ids: 128-bit values written as 32 lowercase hex characters.

DataComp keys every sample by such a uid and stores subsets as a sorted NumPy array of
dtype ``u8,u8`` (high and low 64 bits). We keep an input uid where the source has one,
and otherwise derive it from (url, text) so the same pair always gets the same uid.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

UID_RE = re.compile(r"^[0-9a-f]{32}$")
# Versioned key: changing the derivation must change this, never silently the ids.
_UID_KEY = b"curate-uid-v1"
DATACOMP_DTYPE = np.dtype("u8,u8")


def derive_uid(url: str, text: str) -> str:
    """uid of a (url, text) pair: keyed BLAKE2b-128 of the UTF-8 bytes, separated by NUL."""
    h = hashlib.blake2b(digest_size=16, key=_UID_KEY)
    h.update(url.encode("utf-8"))
    h.update(b"\x00")
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def derive_uids(urls: Sequence[str], texts: Sequence[str]) -> pa.Array:
    """Vector form of ``derive_uid`` (same values)."""
    key = _UID_KEY
    blake = hashlib.blake2b
    out = [blake(f"{u}\x00{t}".encode("utf-8"), digest_size=16, key=key).hexdigest()
           for u, t in zip(urls, texts)]
    return pa.array(out, pa.string())


def normalize_uid(value: str) -> str | None:
    """Lowercase a hex uid; None when it is not 32 hex characters."""
    v = value.strip().lower()
    return v if UID_RE.match(v) else None


def uids_to_datacomp(uids: Iterable[str]) -> np.ndarray:
    """Sorted ``u8,u8`` array (DataComp's subset format) from hex uids; duplicates kept."""
    uids = list(uids)
    arr = np.empty(len(uids), dtype=DATACOMP_DTYPE)
    if uids and all(len(u) == 32 for u in uids):  # the usual case: one hex decode for all
        words = np.frombuffer(bytes.fromhex("".join(uids)), dtype=">u8").reshape(-1, 2)
        arr["f0"], arr["f1"] = words[:, 0], words[:, 1]
    elif uids:
        ints = [int(u, 16) for u in uids]
        arr["f0"] = np.array([i >> 64 for i in ints], dtype=np.uint64)
        arr["f1"] = np.array([i & 0xFFFFFFFFFFFFFFFF for i in ints], dtype=np.uint64)
    arr.sort(order=["f0", "f1"])
    return arr


def datacomp_to_uids(arr: np.ndarray) -> list[str]:
    """Hex uids from a DataComp ``u8,u8`` array, in the array's order."""
    if arr.dtype != DATACOMP_DTYPE:
        raise ValueError(f"expected dtype {DATACOMP_DTYPE}, got {arr.dtype}")
    return [f"{(int(hi) << 64) | int(lo):032x}" for hi, lo in zip(arr["f0"], arr["f1"])]


def hex_prefix_chars(rows: int, per_group: int, most: int = 8) -> int:
    """Hex digits of a prefix of uniform hex hashes (uids, sha256) that splits ``rows`` into
    groups of at most about ``per_group`` rows (at least one digit, at most ``most``). Jobs
    that group rows by such a prefix pay a fixed cost per group: a fixed 4 digits made 65,536
    groups of a small pool (half a minute of calls) and groups of ~200,000 rows at 12.8B."""
    chars = 1
    while rows > per_group * 16 ** chars and chars < most:
        chars += 1
    return chars
