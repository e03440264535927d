"""Subsets: a sorted uid list, the one contract every selection step produces.

A subset named NAME lives at ``DATASET/subsets/NAME/``:
- ``uids.parquet``: one ``uid`` column, sorted (the ``subsets_NAME`` SQL view),
- ``uids.npy``: the same uids as DataComp's sorted ``u8,u8`` array, so DataComp's
  resharder (and ours) accept it,
- ``_manifest.json``: how it was made (stage, parameters, counts, parent subset).
A uid may appear more than once (upsampling); the resharder writes it that many times.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import DatasetError
from curate.names import check_name
from curate.tables import Dataset, atomic_write_bytes, load_schema, write_parquet_atomic
from curate.uid import UID_RE, uids_to_datacomp


def subset_dir(dataset: Dataset, name: str) -> Path:
    check_name(name, "subset name", reserved=False)
    return dataset.root / "subsets" / name


def write_subset(dataset: Dataset, name: str, uids: Iterable[str] | pa.Array | pa.ChunkedArray,
                 manifest: dict | None = None) -> Path:
    """Write a subset (sorted uids, Parquet + DataComp .npy + manifest); returns its folder."""
    if isinstance(uids, (pa.Array, pa.ChunkedArray)):
        arr = uids.cast(pa.string())
    else:
        arr = pa.array(list(uids), pa.string())
    if arr.null_count:
        raise DatasetError(f"subset {name!r}: {arr.null_count} null uids")
    arr = arr.take(pc.array_sort_indices(arr))
    values = arr.to_pylist()
    bad = next((u for u in values if not UID_RE.match(u)), None)
    if bad is not None:
        raise DatasetError(f"subset {name!r}: {bad!r} is not a 32-char lowercase hex uid")
    d = subset_dir(dataset, name)
    table = pa.Table.from_arrays([pa.array(values, pa.string())], schema=load_schema("subset").arrow())
    write_parquet_atomic(table, d / "uids.parquet")
    buf = io.BytesIO()
    np.save(buf, uids_to_datacomp(values))
    atomic_write_bytes(d / "uids.npy", buf.getvalue())
    meta = dict(manifest or {})
    meta.setdefault("name", name)
    meta["count"] = len(values)
    meta["distinct"] = len(set(values))
    atomic_write_bytes(d / "_manifest.json", (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    return d


def read_subset(path_or_dataset: str | Path | Dataset, name: str | None = None) -> list[str]:
    """uids of a subset: a subset folder, a ``uids.parquet``, a DataComp subset file (``.npy``
    or raw ``u8,u8`` records, told apart by content as DataComp's resharder does; sorted, with
    a warning, when it is not), or (dataset, name)."""
    if isinstance(path_or_dataset, Dataset):
        p = subset_dir(path_or_dataset, name or "")
    else:
        p = Path(path_or_dataset)
    if p.is_dir():
        p = p / "uids.parquet"
    if not p.exists():
        raise DatasetError(f"subset not found: {p}")
    from curate.subset_file import is_parquet

    if p.suffix != ".parquet" and not is_parquet(p):
        from curate.progress import info
        from curate.subset_file import first_unsorted, hex_uids, open_subset_array, sort_records, unsorted_warning

        arr = np.array(open_subset_array(p)[0])
        bad = first_unsorted(arr)
        if bad is not None:
            info(unsorted_warning(p, bad))
            arr = sort_records(arr)
        return hex_uids(arr).to_pylist()
    import pyarrow.parquet as pq

    try:
        return pq.read_table(p, columns=["uid"]).column("uid").to_pylist()
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise DatasetError(f"{p}: not a subset Parquet with a uid column ({e})") from None


def read_subset_manifest(dataset: Dataset, name: str) -> dict:
    p = subset_dir(dataset, name) / "_manifest.json"
    return json.loads(p.read_text()) if p.exists() else {}


def list_subsets(dataset: Dataset) -> list[str]:
    d = dataset.root / "subsets"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "uids.parquet").exists())


def append_subset_manifest(dataset: Dataset, name: str, key: str, entry: dict, replace_on: str | None = None) -> dict:
    """Append ``entry`` to the list ``key`` of a subset's ``_manifest.json`` (e.g. the
    trainings and evaluations made from it). With ``replace_on``, an earlier entry with the
    same value of that field is replaced instead of kept. Returns the updated manifest."""
    p = subset_dir(dataset, name) / "_manifest.json"
    if not p.parent.is_dir():
        raise DatasetError(f"subset {name!r} not found in {dataset.root}")
    meta = json.loads(p.read_text()) if p.exists() else {"name": name}
    items = [e for e in meta.get(key, [])
             if replace_on is None or e.get(replace_on) != entry.get(replace_on)]
    items.append(entry)
    meta[key] = items
    atomic_write_bytes(p, (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    return meta
