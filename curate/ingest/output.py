"""Where ingest writes: the tables of a new plan over a completed run are written in its
staging folder and swapped in only when all are complete (a failing rerun never destroys
committed tables); temp files of a killed run are removed first.

The dataset may be a folder or a URI: every step goes through ``curate.storage``. A local swap
renames each table folder; a store has no rename, so there each committed shard is copied
(server-side) under the table's key, its commit marker after it, and the staged copy removed
last: a run killed part-way leaves the staged table, and the next run swaps it again.
"""

from __future__ import annotations

import json
import os

from curate import storage
from curate.tables import Dataset
from curate.tables.replace import remove_replaced_leftover, replace_table


INGEST_TABLES = ("samples", "rejects", "duplicates", "url_text_duplicates")
PLAN_FILE = "_runs/ingest.plan.json"
STAGING_DIR = "_staging"  # hidden from table discovery
STAGED_TABLES = "tables"  # a new plan's tables, written in its staging folder while an older run's stay
SWAP_FILE = "swap.json"  # written once those tables are complete: put them in place


def staging_folder(dataset: Dataset, plan_key: str):
    """This plan's staging folder: a ``Path``, or a URI for a dataset on a store."""
    return dataset.path(staging_name(plan_key))


def staging_name(plan_key: str) -> str:
    return f"{STAGING_DIR}/ingest-{plan_key[:16]}"


def _staging_runs(dataset: Dataset) -> list[str]:
    """Names of the plans with a staging folder (``ingest-<key>``), sorted."""
    where = dataset.path(STAGING_DIR)
    if not dataset.remote:
        return sorted(p.name for p in where.glob("ingest-*")) if where.is_dir() else []
    import pyarrow.fs as pafs

    # a recursive listing: GCS lists a folder's objects, not its sub-folders (docs/storage.md)
    loc = storage.resolve(where)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=True))
    except OSError as e:
        raise storage.StorageError(f"cannot list {loc}: {e}") from None
    prefix = loc.path.rstrip("/") + "/"
    return sorted({i.path[len(prefix):].split("/", 1)[0] for i in infos if i.type == pafs.FileType.File
                   and i.path.startswith(prefix) and i.path[len(prefix):].startswith("ingest-")})


def remove_other_staging(dataset: Dataset) -> None:
    """Every plan's staging folder removed (a run ends holding the dataset's lock, its own
    tables in place: any staging left is another plan's, which never resumes)."""
    for run in _staging_runs(dataset):
        storage.remove_tree(dataset.path(f"{STAGING_DIR}/{run}"))


def remove_if_empty(folder) -> None:
    """A local folder removed when empty (a prefix on a store has no folder to remove)."""
    if storage.is_uri(folder):
        return
    try:
        os.rmdir(folder)
    except OSError:  # not empty (another plan's staging) or already gone
        pass


def remove_stale_temp_files(dataset: Dataset) -> list:
    """Temp files of writes a kill -9 interrupted in the tables ingest writes, its run records
    and its staging; run before anything is written, so none belongs to a live writer. A store
    has none (its objects are written whole)."""
    if dataset.remote:
        return []
    staging = dataset.root / STAGING_DIR
    staged = list(staging.rglob(".*.tmp")) if staging.is_dir() else []
    for p in staged:
        p.unlink(missing_ok=True)
    return dataset.remove_temp_files(*INGEST_TABLES) + staged


def finish_pending_swap(dataset: Dataset) -> None:
    """Put in place the tables of a run that completed them in its staging folder (see
    ``prepare_output``): each old table is replaced by the new one, then the staging folder
    goes. Idempotent, so a run killed half-way through is finished by the next one."""
    for run in _staging_runs(dataset):
        staging = storage.join(dataset.path(STAGING_DIR), run)
        marker = storage.join(staging, SWAP_FILE)
        if not storage.exists(marker):
            continue
        spec = json.loads(storage.read_bytes(marker))
        for t in spec["tables"]:
            new = storage.join(staging, STAGED_TABLES, t)
            if storage.exists(new):  # else moved by the killed run already
                replace_table(dataset, new, t)
            else:  # ...which may have been killed before removing the old one
                remove_replaced_leftover(dataset, t)
        if spec.get("manifest"):  # the manifest of those tables (a finishing run rewrites it)
            dataset.write_json("_runs/ingest.json", spec["manifest"])
        dataset.write_json(PLAN_FILE, {"plan_key": spec["plan_key"], "target": "."})
        storage.delete(storage.resolve(marker))


def prepare_output(dataset: Dataset, plan_key: str) -> tuple[Dataset, bool]:
    """Where this run writes its tables, and whether it resumes the same plan (keeping its
    committed shards). The tables of a completed earlier run (it has a manifest) are never
    removed before the new ones are complete: a new plan then writes into its staging
    folder and ``finish_pending_swap`` replaces them at the end; a failing run leaves them
    and their manifest as they were. Without a completed run, tables are written in place."""
    plan_path = dataset.path(PLAN_FILE)
    own = staging_name(plan_key)
    staging_tables = f"{own}/{STAGED_TABLES}"
    plan = {}
    if storage.exists(plan_path):
        try:
            plan = json.loads(storage.read_bytes(plan_path))
        except ValueError:
            pass
    same = plan.get("plan_key") == plan_key
    for run in _staging_runs(dataset):  # other plans' files never resume
        if not (same and f"{STAGING_DIR}/{run}" == own):
            storage.remove_tree(dataset.path(f"{STAGING_DIR}/{run}"))
    if same:
        where = plan.get("target", ".")
        return (dataset if where == "." else Dataset(dataset.path(where))), True
    if storage.exists(dataset.path("_runs/ingest.json")) and any(dataset.has_table(t) for t in INGEST_TABLES):
        dataset.write_json(PLAN_FILE, {"plan_key": plan_key, "target": staging_tables})
        return Dataset(dataset.path(staging_tables)), False
    for t in INGEST_TABLES:  # leftovers of a run that never completed
        storage.remove_tree(dataset.table_dir(t))
    dataset.write_json(PLAN_FILE, {"plan_key": plan_key, "target": "."})
    return dataset, False
