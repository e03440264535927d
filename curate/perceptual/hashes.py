"""Perceptual hashes of the downloaded images: ``phashes/`` (uid, phash, dhash, colorhash).

One task per image shard (``images/NNNNNNNN.tar``) decodes every success row's image as a
viewer shows it (``curate.embed.core.open_image``: EXIF orientation, colour profile, bit
depth) and hashes it with ``imagehash``. It writes ``phash_failures/part-NNNNN.parquet`` (rows
whose image could not be decoded, with the reason) and then ``phashes/part-NNNNN.parquet``
(the completion marker), each atomically and sorted by uid; a rerun skips shards whose
``phashes`` part exists.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from curate import storage
from curate.errors import DatasetError
from curate.tables import Dataset, load_schema, write_parquet_atomic

HASHES = "phashes"
FAILURES = "phash_failures"
# hash name -> bits; colorhash with binbits=3 is 14 bins x 3 bits
HASH_BITS = {"phash": 64, "dhash": 64, "colorhash": 42}
HASH_KINDS = tuple(HASH_BITS)
COLORHASH_BINBITS = 3


def hash_bits_to_int(bits: np.ndarray) -> int:
    """imagehash's boolean matrix as an integer, row by row, most significant bit first
    (equal to ``int(str(h), 16)`` for the square hashes)."""
    v = 0
    for b in np.asarray(bits, dtype=bool).ravel():
        v = (v << 1) | int(b)
    return v


def image_hashes(img) -> dict[str, int]:
    """pHash, dHash and colorhash of a decoded PIL image, as unsigned integers."""
    import imagehash

    return {"phash": hash_bits_to_int(imagehash.phash(img).hash),
            "dhash": hash_bits_to_int(imagehash.dhash(img).hash),
            "colorhash": hash_bits_to_int(imagehash.colorhash(img, binbits=COLORHASH_BINBITS).hash)}


def hash_images(uids: list[str], keys: list[str], images: dict[str, bytes], shard: str) -> tuple[pa.Table, pa.Table, dict]:
    """Hash one shard's images. Returns (phashes table, failures table, stats), both sorted by
    uid; every input uid lands in exactly one of the two tables."""
    from curate.embed.core import ImageDecodeError, open_image

    t0 = time.perf_counter()
    ok_uid: list[str] = []
    cols: dict[str, list[int]] = {k: [] for k in HASH_KINDS}
    failures: list[dict] = []
    for uid, key in zip(uids, keys):
        where = f"{shard}:{key}"
        data = images.get(key)
        try:
            if data is None:
                raise ImageDecodeError(where, "missing_member", "the image shard has no image for this key")
            h = image_hashes(open_image(data, where=where))
        except ImageDecodeError as e:
            failures.append({"uid": uid, "shard": shard, "key": key, "error_class": e.error_class,
                             "error_message": str(e)})
            continue
        ok_uid.append(uid)
        for k in HASH_KINDS:
            cols[k].append(h[k])
    schema = load_schema(HASHES).arrow()
    table = pa.Table.from_arrays([pa.array(ok_uid, pa.string())] + [pa.array(cols[k], pa.uint64()) for k in HASH_KINDS],
                                 schema=schema).sort_by("uid")
    fschema = load_schema(FAILURES).arrow()
    fails = (pa.Table.from_pylist(failures, schema=fschema).sort_by("uid") if failures else fschema.empty_table())
    stats = {"samples": len(uids), "hashed": table.num_rows, "failed": fails.num_rows,
             "seconds": round(time.perf_counter() - t0, 4)}
    return table, fails, stats


def run_hash_task(task: dict) -> dict:
    """Executor task: hash image shard ``task['shard_id']`` unless its ``phashes`` part exists."""
    from curate.download.job import IMAGES, shard_name
    from curate.embed.job import read_tar_images, shard_samples

    ds = Dataset(task["root"])
    shard_id, digits = task["shard_id"], task["digits"]
    out = ds.shard_path(HASHES, shard_id)
    if storage.committed(out):
        return {"shard_id": shard_id, "skipped": True}
    rows = shard_samples(ds.root, shard_id, digits)
    shard = f"{IMAGES}/{shard_name(shard_id, digits)}.tar"
    keys = rows.column("key").to_pylist()
    images = read_tar_images(storage.join(ds.root, shard), set(keys))
    table, fails, stats = hash_images(rows.column("uid").to_pylist(), keys, images, shard)
    write_parquet_atomic(fails, ds.shard_path(FAILURES, shard_id))
    write_parquet_atomic(table, out)  # last: its existence marks the shard done
    return {"shard_id": shard_id, "skipped": False, **stats}


def check_hashes(ds: Dataset) -> list[int]:
    """The image shards to hash (before any engine starts)."""
    from curate.download.job import complete_shards

    if not ds.exists():
        raise DatasetError(f"dataset folder {ds.root} does not exist")
    if not ds.has_table(HASHES):
        shards = complete_shards(ds)
        if not shards:
            raise DatasetError(f"{ds.root} has no downloaded image shards and no {HASHES} table; "
                               f"run `curate download` first")
        return shards
    return complete_shards(ds)


def run_hashes(ds: Dataset, executor) -> dict:
    """Hash every complete image shard that has no ``phashes`` part yet; returns counts."""
    from curate.download.job import shard_digits

    shards = check_hashes(ds)
    if not shards:  # a table given as is (no image shards here): nothing to compute
        return {"shards": 0, "shards_hashed": 0, "hashed": ds.count(HASHES), "failed": _count(ds, FAILURES)}
    digits = shard_digits(ds)
    tasks = [{"root": str(ds.root), "shard_id": s, "digits": digits} for s in shards
             if not storage.committed(ds.shard_path(HASHES, s))]
    ds.remove_temp_files(HASHES, FAILURES)  # a killed run's half-written parts
    results = executor.map_tasks(tasks, run_hash_task, "perceptual hashes") if tasks else []
    done = [r for r in results if not r.get("skipped")]
    return {"shards": len(shards), "shards_hashed": len(done), "hashed": ds.count(HASHES),
            "failed": _count(ds, FAILURES), "seconds": round(sum(r["seconds"] for r in done), 3)}


def _count(ds: Dataset, table: str) -> int:
    return ds.count(table) if ds.has_table(table) else 0
