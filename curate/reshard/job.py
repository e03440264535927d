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
import tempfile
from pathlib import Path

from curate import storage
from curate.errors import DatasetError
from curate.manifest import RunManifest, code_version
from curate.reshard.finish import finish_outputs
from curate.reshard.output import out_path, prepare_output
from curate.reshard.plan import ReshardPlan, plan_reshard
from curate.reshard.shard_task import OUTPUT_SHARD_FORMAT, write_shard_spill
from curate.subset import read_subset_manifest, subset_dir
from curate.tables import Dataset, atomic_write_bytes


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
    out = out_path(output) if output is not None else ds.path(f"webdataset/{name}")
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
        finished = prepare_output(out, plan, overwrite)
        if finished is not None:
            return finished  # already complete with this exact plan
        for t in plan.tasks:
            t["plan_hash"] = plan.plan_hash
            t["missing_out"] = str(ds.path(f"{work}/missing/part-{t['index']:05d}.parquet"))

        with manifest.stage("write"):
            results = executor.map_tasks(plan.tasks, write_shard_spill, description="reshard")

        with manifest.stage("finish"):
            written, not_written = finish_outputs(ds, executor, plan, results, source, work, out, Path(scratch))
    finally:
        storage.remove_tree(ds.path(work))
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    meta = _meta(ds, subset, subset_file, out, plan, results, written, not_written, manifest)
    atomic_write_bytes(storage.join(out, "meta.json"),
                       (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    manifest["counts"] = meta["counts"]
    manifest["outputs"] = {"dir": str(out), "shards": len(plan.tasks)}
    manifest.write(ds, f"reshard-{name}")
    return meta


def _meta(ds: Dataset, subset: str | None, subset_file, out, plan: ReshardPlan, results: list[dict], written: int,
          not_written, manifest: RunManifest) -> dict:
    """``meta.json``: parameters, counts, shard list, code version, timings."""
    from curate.tables.fingerprint import table_fingerprint

    sub_manifest = read_subset_manifest(ds, subset) if subset else {}
    params = manifest["params"]
    return {
        "dataset": str(ds.root),
        "subset": subset,
        # what the subset's uids were: a training or evaluation links into the subset's manifest
        # only while they still are (a later select of the same name is another subset)
        "subset_fingerprint": table_fingerprint(ds, f"subsets/{subset}") if subset else None,
        "subset_path": str(subset_file) if subset_file else str(subset_dir(ds, subset)),
        "subset_manifest": sub_manifest,
        "output_dir": str(out),
        "output_shard_format": OUTPUT_SHARD_FORMAT,
        "output_shard_count": len(plan.tasks),
        "shard_size": params["shard_size"],
        "shuffle": params["shuffle"],
        "seed": params["seed"],
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
