"""A reshard's output folder (a local folder or a URI prefix): its files, clearing or resuming it
before a run, and reading a finished one (``meta.json``, shard sizes, shard paths)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs as pafs

from curate import storage
from curate.errors import DatasetError


def out_path(output) -> Path | str:
    """An output folder: a ``Path``, or a URI string (``s3://bucket/shards``)."""
    return str(output) if storage.is_uri(output) else Path(output)


def out_names(out) -> list[str]:
    """Names of the files directly in an output folder/prefix (none when it does not exist)."""
    if storage.is_uri(out):
        return sorted(i.base_name for i in storage.listing(storage.resolve(out))
                      if i.type == pafs.FileType.File)
    return sorted(p.name for p in out.iterdir() if p.is_file()) if out.is_dir() else []


def remove_output_file(out, name: str) -> None:
    p = storage.join(out, name)
    if storage.is_uri(p):
        storage.delete(storage.resolve(p))
    else:
        p.unlink()


def clear_output(out) -> None:
    for n in out_names(out):
        if n.rsplit(".", 1)[-1] in ("tar", "json", "npy", "parquet") or n.endswith(".tmp"):
            remove_output_file(out, n)


def prepare_output(out, plan, overwrite: bool) -> dict | None:
    """Make ``out`` ready for ``plan``: cleared (``overwrite``), or an interrupted run's shards
    kept (those beyond the plan's shard count removed), or created. Returns the finished
    run's ``meta.json`` when ``out`` already holds this exact plan; a different finished run
    without ``overwrite`` is an error."""
    present = out_names(out)
    if present:
        meta_path = storage.join(out, "meta.json")
        old = json.loads(storage.read_bytes(meta_path)) if "meta.json" in present else None
        resumable = any(n.endswith("_stats.json") for n in present) and "meta.json" not in present
        if overwrite:
            clear_output(out)
        elif resumable:  # an interrupted run: keep finished shards of this plan, drop extra ones
            for n in present:
                if not (n.endswith(".tar") or n.endswith("_stats.json")):
                    continue
                stem = n.split("_")[0].split(".")[0]
                if stem.isdigit() and int(stem) >= len(plan.tasks):
                    remove_output_file(out, n)
        elif old is not None and old.get("plan_hash") == plan.plan_hash:
            return old  # already complete with this exact plan
        elif not resumable:
            raise DatasetError(f"{out} is not empty and holds a different reshard; pass --overwrite "
                               f"to replace it or choose another --output")
    if not storage.is_uri(out):
        out.mkdir(parents=True, exist_ok=True)
    return None


def read_meta(folder: str | os.PathLike) -> dict:
    p = storage.join(out_path(folder), "meta.json")
    if not storage.exists(p):
        raise DatasetError(f"{folder}: no meta.json (not a finished reshard output)")
    return json.loads(storage.read_bytes(p))


def shard_sizes(folder: str | os.PathLike, names: list[str]) -> dict[str, int | None]:
    """Samples per shard: from ``sizes.json`` (curate, open_clip) or else the shard's
    ``<stem>_stats.json`` ``successes`` (DataComp's resharder and img2dataset); None when
    neither says."""
    folder = out_path(folder)
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


def shard_names(folder: str | os.PathLike) -> list[str]:
    """The .tar shard names of a reshard output (as its meta.json lists them), or of any folder."""
    folder = out_path(folder)
    meta = read_meta(folder) if storage.exists(storage.join(folder, "meta.json")) else {}
    if "output_shard_format" in meta and "output_shard_count" in meta:
        fmt, n = meta["output_shard_format"], int(meta["output_shard_count"])
        return [fmt.format(i) for i in range(n)]
    return [n for n in out_names(folder) if n.endswith(".tar")]


def shard_urls(folder: str | os.PathLike) -> tuple[list[str], int]:
    """Shard paths of a reshard output (curate's or DataComp's, or any folder of .tar files)
    and their sample total (0 when some shard's size is unknown)."""
    folder = out_path(folder)
    names = shard_names(folder)
    if not names:
        raise DatasetError(f"{folder}: no .tar shards")
    sizes = shard_sizes(folder, names)
    total = 0 if any(v is None for v in sizes.values()) else sum(sizes.values())
    return [str(storage.join(folder, n)) for n in names], total
