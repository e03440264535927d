"""Reshard: a subset's samples, read from the download shards, written as training tars.

Semantics follow DataComp's resharder: a uid that appears k times in the subset is written
k times, keyed ``<uid>-0`` ... ``<uid>-(k-1)`` (every sample gets the ``-j`` suffix), shards
hold ``shard_size`` samples (default 10,000), and ``meta.json`` carries
``output_shard_count`` / ``output_shard_format`` so DataComp's and curate's trainers find
the shards. Unlike DataComp, output shards are planned ahead (by the engine's workers, with
one summary per source shard on the driver: ``curate.reshard.plan``), so shard contents and
names are deterministic, every shard is one independent, resumable task, and every subset
row ends written or listed in ``_missing.parquet`` with a reason.

Output folder::

    00000000.tar ...          samples (members <uid>-<j>.jpg/.txt/.json, as downloaded)
    00000000_stats.json ...   per shard: samples written, bytes, missing by reason (written last)
    sizes.json                {shard file: samples}: open_clip_train reads it for dataset size
    sample_ids.npy            the subset as DataComp u8,u8 uids (with repeats)
    _missing.parquet          uid, copies, reason for subset rows not written
    meta.json                 parameters, counts, shard list, code version, timings (written last)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate import storage
from curate.errors import DatasetError
from curate.manifest import RunManifest, code_version
from curate.reshard.plan import (DOWNLOAD_FAILED, DROPPED, NO_IMAGE_SHARD, NOT_IN_DOWNLOADS,  # noqa: F401
                                 ReshardPlan, plan_reshard, task_sources)
from curate.subset import read_subset_manifest, subset_dir
from curate.tables import Dataset, atomic_write_bytes, load_schema, write_parquet_atomic
from curate.tables.atomic import atomic_path

OUTPUT_SHARD_FORMAT = "{:08d}.tar"
STATS_FORMAT = "{:08d}_stats.json"

# Reasons a subset row is not written (besides the plan's NOT_IN_DOWNLOADS, DOWNLOAD_FAILED and
# NO_IMAGE_SHARD, re-exported here).
SOURCE_UNREADABLE = "source_shard_unreadable"
MISSING_IN_SHARD = "missing_in_shard"
NO_IMAGE_MEMBER = "no_image_member"

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def _split_member(name: str) -> tuple[str, str] | None:
    """webdataset's key/extension split: key = path up to the first dot of the basename."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return None
    return name[:dot], name[dot + 1:].lower()


def _read_members(path: str, wanted: set[str]) -> tuple[dict[str, dict[str, bytes]], str | None]:
    """Members of ``wanted`` keys in one tar, streamed once; (samples, error or None)."""
    found: dict[str, dict[str, bytes]] = {}
    try:
        with storage.open_input_stream(path) as src, tarfile.open(fileobj=src, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                split = _split_member(m.name)
                if split is None or split[0] not in wanted:
                    continue
                f = tf.extractfile(m)
                if f is not None:
                    found.setdefault(split[0], {})[split[1]] = f.read()
    except (OSError, tarfile.TarError, EOFError) as e:
        return found, f"{path}: {e}"
    return found, None


def write_shard_task(task: dict) -> dict:
    """Write output shard ``task['index']`` (tar, then its stats file last). Skips a finished shard."""
    out = _out_path(task["output"])
    index = task["index"]
    tar_path = storage.join(out, OUTPUT_SHARD_FORMAT.format(index))
    stats_path = storage.join(out, STATS_FORMAT.format(index))
    if storage.exists(stats_path) and storage.exists(tar_path):  # the stats file is written last
        stats = json.loads(storage.read_bytes(stats_path))
        if stats.get("plan_hash") == task.get("plan_hash"):
            stats["skipped"] = True
            return stats
    t0 = time.perf_counter()
    samples: list[dict] = []
    missing: list[list] = []  # [uid, reason]
    errors: list[str] = []
    sources = task_sources(task)
    for src in sources:
        wanted = {item[0] for item in src["items"]}
        found, err = _read_members(src["path"], wanted)
        if err:
            errors.append(err)
        for key, uid, j in src["items"]:
            members = found.get(key)
            if members is None:
                missing.append([uid, SOURCE_UNREADABLE if err else MISSING_IN_SHARD])
                continue
            if not any(e in members for e in IMAGE_EXTS):
                missing.append([uid, NO_IMAGE_MEMBER])
                continue
            sample = {"__key__": f"{uid}-{j}"}
            for ext, data in members.items():
                if ext == "json":
                    try:
                        meta = json.loads(data)
                    except ValueError:
                        meta = {}
                    if not isinstance(meta, dict):
                        meta = {}
                    meta.update(uid=uid, source_shard=src["rel"], source_key=key)
                    data = json.dumps(meta, sort_keys=True).encode()
                sample[ext] = data
            if "json" not in sample:
                sample["json"] = json.dumps({"uid": uid, "source_shard": src["rel"], "source_key": key},
                                            sort_keys=True).encode()
            samples.append(sample)
    if task.get("shuffle_seed") is not None:
        random.Random(task["shuffle_seed"]).shuffle(samples)

    import webdataset as wds

    # written aside (locally: renamed into place; on a store: uploaded whole under its key)
    with atomic_path(tar_path) as tmp:
        with open(tmp, "wb") as f:
            # Fixed mtime/owner: same plan, same bytes.
            writer = wds.TarWriter(f, encoder=False, mtime=0.0, user="curate", group="curate")
            for s in samples:
                writer.write(s)
            writer.close()
        size = tmp.stat().st_size
    reasons = Counter(r for _, r in missing)
    stats = {
        "shard": storage.basename(tar_path),
        "index": index,
        "successes": len(samples),  # DataComp's field name for a shard's sample count
        "planned": sum(len(s["items"]) for s in sources),
        "missing": dict(sorted(reasons.items())),
        "missing_uids": missing,
        "bytes": size,
        "sources": [s["rel"] for s in sources],
        "errors": errors,
        "seconds": round(time.perf_counter() - t0, 4),
        "plan_hash": task.get("plan_hash"),
    }
    atomic_write_bytes(stats_path, (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
    stats["skipped"] = False
    return stats


def _out_path(output) -> Path | str:
    """An output folder: a ``Path``, or a URI string (``s3://bucket/shards``)."""
    return str(output) if storage.is_uri(output) else Path(output)


def _out_names(out) -> list[str]:
    """Names of the files directly in an output folder/prefix (none when it does not exist)."""
    if storage.is_uri(out):
        return sorted(i.base_name for i in storage.listing(storage.resolve(out))
                      if i.type == pafs.FileType.File)
    return sorted(p.name for p in out.iterdir() if p.is_file()) if out.is_dir() else []


def _remove(out, name: str) -> None:
    p = storage.join(out, name)
    if storage.is_uri(p):
        storage.delete(storage.resolve(p))
    else:
        p.unlink()


def _clear_output(out) -> None:
    for n in _out_names(out):
        if n.rsplit(".", 1)[-1] in ("tar", "json", "npy", "parquet") or n.endswith(".tmp"):
            _remove(out, n)


_SPILLED = pa.schema([("uid", pa.string()), ("reason", pa.string())])
MISSING_ROW_GROUP = 65536  # write_parquet_atomic's row group size: same bytes either way


def write_shard_spill(task: dict) -> dict:
    """``write_shard_task``, its missing rows written to ``task['missing_out']`` for the engine
    to count (the driver gets per-reason counts, not a row per missing sample)."""
    stats = write_shard_task(task)
    rows = stats.pop("missing_uids", [])
    write_parquet_atomic(pa.table([pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.string())],
                                  schema=_SPILLED), task["missing_out"])
    return stats


def _subset_source(ds: Dataset, subset: str | None, subset_file):
    """The file holding the subset's uids: a subset's ``uids.parquet``, or the given file
    (a path or a URI)."""
    from curate.subset_file import is_uid_parquet

    p = (str(subset_file) if storage.is_uri(subset_file) else Path(subset_file)) if subset_file is not None \
        else subset_dir(ds, subset)
    if storage.is_dir(p):
        p = storage.join(p, "uids.parquet")
    if not storage.exists(p):
        raise DatasetError(f"subset not found: {p}")
    is_uid_parquet(p)  # a Parquet without a uid column is an error here
    return p


def _uid_table(source, converted):
    """A Parquet file with the subset's uids (with repeats) for the engine: the source itself,
    or a DataComp ``.npy`` / raw file streamed into ``converted``."""
    from curate.subset_file import is_parquet, write_uid_table

    if str(source).endswith(".parquet") or is_parquet(source):
        return source
    write_uid_table(storage.local_copy(source), converted)
    return converted


def _write_missing(ds: Dataset, table: str, rows, path) -> None:
    """``_missing.parquet``: the rows sorted by (uid, reason) by the workers, then streamed into
    one file a row group at a time (the bytes of a whole-table ``write_parquet_atomic``)."""
    from curate.tables.atomic import PARQUET_OPTIONS

    schema = load_schema("reshard_missing").conform(DROPPED.empty_table()).schema
    written = rows.write_sorted(ds, table, DROPPED, ["uid", "reason"], 1 << 40)
    if written["rows"] == 0:
        write_parquet_atomic(schema.empty_table(), path)
        return
    pending: list[pa.RecordBatch] = []
    n = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as writer:
            def flush(final: bool) -> None:
                nonlocal pending, n
                while n >= MISSING_ROW_GROUP or (final and n):
                    t = pa.Table.from_batches(pending, schema=DROPPED).combine_chunks()
                    head, rest = t.slice(0, MISSING_ROW_GROUP), t.slice(MISSING_ROW_GROUP)
                    writer.write_table(pa.Table.from_arrays(head.columns, schema=schema),
                                       row_group_size=MISSING_ROW_GROUP)
                    pending, n = rest.to_batches(), rest.num_rows

            for shard in ds.shards(table):
                for b in storage.parquet_file(shard).iter_batches(batch_size=MISSING_ROW_GROUP, columns=DROPPED.names):
                    pending.append(b.cast(DROPPED))
                    n += b.num_rows
                    flush(False)
            flush(True)


def _write_sample_ids(source, work: Path, path) -> None:
    """``sample_ids.npy``: the subset's uids (with repeats) as DataComp's sorted ``u8,u8`` array,
    streamed a chunk at a time (sorted through bucket files when the source is not)."""
    from curate.subset_file import is_parquet, open_subset_array, parquet_records
    from curate.subset_records import CHUNK_ROWS, first_unsorted, sorted_chunks, write_npy_header
    if str(source).endswith(".parquet") or is_parquet(source):
        arr = parquet_records(storage.local_copy(source), work / "sample_ids.u8u8")
    else:
        arr, _ = open_subset_array(storage.local_copy(source))
    chunks = (sorted_chunks(arr, work / "sort") if first_unsorted(arr) is not None else
              (np.asarray(arr[s:s + CHUNK_ROWS]) for s in range(0, len(arr), CHUNK_ROWS)))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write_npy_header(f, len(arr))
            for c in chunks:
                f.write(np.ascontiguousarray(c).tobytes())


def reshard(dataset: Dataset | str | os.PathLike, subset: str | None = None, output: str | os.PathLike | None = None,
            *, subset_file: str | os.PathLike | None = None, shard_size: int = 10_000, shuffle: bool = False,
            seed: int = 0, overwrite: bool = False, executor=None) -> dict:
    """Write the subset's samples as WebDataset shards; returns the ``meta.json`` content.

    ``subset`` names ``DATASET/subsets/<subset>``; ``subset_file`` is any subset path
    (folder, uids.parquet, DataComp .npy). Output defaults to ``DATASET/webdataset/<subset>``.
    Re-running with the same plan resumes (finished shards are skipped); a different plan in
    a non-empty folder needs ``overwrite=True``.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    if subset is None and subset_file is None:
        raise DatasetError("reshard needs a subset name or a subset file")
    name = subset or Path(subset_file).stem
    params = {"subset": subset, "subset_file": str(subset_file) if subset_file else None,
              "shard_size": shard_size, "shuffle": shuffle, "seed": seed}
    manifest = RunManifest("reshard", params)
    out = _out_path(output) if output is not None else ds.path(f"webdataset/{name}")
    work = f"_tmp/reshard-{name}-{hashlib.sha256(str(out).encode()).hexdigest()[:8]}"
    storage.remove_tree(ds.path(work))
    if executor is None:
        from curate.engine import LocalExecutor

        executor = LocalExecutor()
    scratch = tempfile.mkdtemp(prefix="curate-reshard-")  # local scratch (sorting sample ids)
    try:
        with manifest.stage("plan"):
            source = _subset_source(ds, subset, subset_file)
            plan = plan_reshard(ds, _uid_table(source, ds.path(f"{work}/uids.parquet")), work, shard_size=shard_size,
                                shuffle=shuffle, seed=seed, output=out, executor=executor)
        meta_path = storage.join(out, "meta.json")
        present = _out_names(out)
        if present:
            old = json.loads(storage.read_bytes(meta_path)) if "meta.json" in present else None
            resumable = any(n.endswith("_stats.json") for n in present) and "meta.json" not in present
            if overwrite:
                _clear_output(out)
            elif resumable:  # an interrupted run: keep finished shards of this plan, drop extra ones
                for n in present:
                    if not (n.endswith(".tar") or n.endswith("_stats.json")):
                        continue
                    stem = n.split("_")[0].split(".")[0]
                    if stem.isdigit() and int(stem) >= len(plan.tasks):
                        _remove(out, n)
            elif old is not None and old.get("plan_hash") == plan.plan_hash:
                return old  # already complete with this exact plan
            elif not resumable:
                raise DatasetError(f"{out} is not empty and holds a different reshard; pass --overwrite "
                                   f"to replace it or choose another --output")
        if not storage.is_uri(out):
            out.mkdir(parents=True, exist_ok=True)
        for t in plan.tasks:
            t["plan_hash"] = plan.plan_hash
            t["missing_out"] = str(ds.path(f"{work}/missing/part-{t['index']:05d}.parquet"))

        with manifest.stage("write"):
            results = executor.map_tasks(plan.tasks, write_shard_spill, description="reshard")

        with manifest.stage("finish"):
            task_missing: Counter = Counter()
            for r in results:
                task_missing.update(r["missing"])
            late = executor.frame_read([t["missing_out"] for t in plan.tasks], _SPILLED).aggregate(
                ["uid", "reason"], {"copies": ("uid", "count")}).select(DROPPED.names)
            _write_missing(ds, f"{work}/missing_sorted", plan.dropped_rows.union(late),
                           storage.join(out, "_missing.parquet"))
            _write_sample_ids(source, Path(scratch), storage.join(out, "sample_ids.npy"))
            sizes = {r["shard"]: r["successes"] for r in results}
            atomic_write_bytes(storage.join(out, "sizes.json"),
                               (json.dumps(sizes, indent=1, sort_keys=True) + "\n").encode())
            written = sum(sizes.values())
            not_written = Counter(plan.dropped) + task_missing
            if written + sum(not_written.values()) != plan.subset_rows:  # bookkeeping invariant
                raise DatasetError(f"reshard accounting mismatch: {written} written + {sum(not_written.values())} "
                                   f"not written != {plan.subset_rows} subset rows")
    finally:
        storage.remove_tree(ds.path(work))
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    sub_manifest = read_subset_manifest(ds, subset) if subset else {}
    meta = {
        "dataset": str(ds.root),
        "subset": subset,
        "subset_path": str(subset_file) if subset_file else str(subset_dir(ds, subset)),
        "subset_manifest": sub_manifest,
        "output_dir": str(out),
        "output_shard_format": OUTPUT_SHARD_FORMAT,
        "output_shard_count": len(plan.tasks),
        "shard_size": shard_size,
        "shuffle": shuffle,
        "seed": seed,
        "plan_hash": plan.plan_hash,
        "counts": {
            "subset_rows": plan.subset_rows,
            "distinct_uids": plan.distinct_uids,
            "written": written,
            "not_written": dict(sorted(not_written.items())),
            "source_shards": plan.sources,
            "resumed_shards": sum(1 for r in results if r.get("skipped")),
        },
        "bytes": sum(r["bytes"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
        "code": code_version(),
        "timings_s": manifest["timings_s"],
    }
    atomic_write_bytes(meta_path, (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    manifest["counts"] = meta["counts"]
    manifest["outputs"] = {"dir": str(out), "shards": len(plan.tasks)}
    manifest.write(ds, f"reshard-{name}")
    return meta


def read_meta(folder: str | os.PathLike) -> dict:
    p = storage.join(_out_path(folder), "meta.json")
    if not storage.exists(p):
        raise DatasetError(f"{folder}: no meta.json (not a finished reshard output)")
    return json.loads(storage.read_bytes(p))


def shard_sizes(folder: str | os.PathLike, names: list[str]) -> dict[str, int | None]:
    """Samples per shard: from ``sizes.json`` (curate, open_clip) or else the shard's
    ``<stem>_stats.json`` ``successes`` (DataComp's resharder and img2dataset); None when
    neither says."""
    folder = _out_path(folder)
    table: dict = {}
    sizes_path = storage.join(folder, "sizes.json")
    if storage.exists(sizes_path):
        try:
            table = json.loads(storage.read_bytes(sizes_path))
        except ValueError as e:
            raise DatasetError(f"{sizes_path}: not valid JSON ({e})") from None
    out: dict[str, int | None] = {}
    for n in names:
        size = table.get(n)
        if size is None:
            stats = storage.join(folder, n[: -len(".tar")] + "_stats.json" if n.endswith(".tar") else n + "_stats.json")
            if storage.exists(stats):
                try:
                    size = json.loads(storage.read_bytes(stats)).get("successes")
                except (ValueError, AttributeError) as e:
                    raise DatasetError(f"{stats}: not a shard stats JSON object ({e})") from None
        out[n] = int(size) if size is not None else None
    return out


def shard_urls(folder: str | os.PathLike) -> tuple[list[str], int]:
    """Shard paths of a reshard output (curate's or DataComp's, or any folder of .tar files)
    and their sample total (0 when some shard's size is unknown)."""
    folder = _out_path(folder)
    meta = read_meta(folder) if storage.exists(storage.join(folder, "meta.json")) else {}
    if "output_shard_format" in meta and "output_shard_count" in meta:
        fmt, n = meta["output_shard_format"], int(meta["output_shard_count"])
        names = [fmt.format(i) for i in range(n)]
    else:
        names = [n for n in _out_names(folder) if n.endswith(".tar")]
    if not names:
        raise DatasetError(f"{folder}: no .tar shards")
    sizes = shard_sizes(folder, names)
    total = 0 if any(v is None for v in sizes.values()) else sum(sizes.values())
    return [str(storage.join(folder, n)) for n in names], total
