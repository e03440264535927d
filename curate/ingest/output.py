"""Where ingest writes: the tables of a new plan over a completed run are written in its
staging folder and swapped in only when all are complete (a failing rerun never destroys
committed tables); temp files of a killed run are removed first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from curate.tables import Dataset


INGEST_TABLES = ("samples", "rejects", "duplicates", "url_text_duplicates")
PLAN_FILE = "_runs/ingest.plan.json"
STAGING_DIR = "_staging"  # hidden from table discovery
STAGED_TABLES = "tables"  # a new plan's tables, written in its staging folder while an older run's stay
SWAP_FILE = "swap.json"  # written once those tables are complete: put them in place


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another plan's staging) or already gone
        pass


def remove_stale_temp_files(dataset: Dataset) -> list[Path]:
    """Temp files of writes a kill -9 interrupted in the tables ingest writes, its run records
    and its staging; run before anything is written, so none belongs to a live writer."""
    staging = dataset.root / STAGING_DIR
    staged = list(staging.rglob(".*.tmp")) if staging.is_dir() else []
    for p in staged:
        p.unlink(missing_ok=True)
    return dataset.remove_temp_files(*INGEST_TABLES) + staged


def finish_pending_swap(dataset: Dataset) -> None:
    """Put in place the tables of a run that completed them in its staging folder (see
    ``prepare_output``): each old table is replaced by the new one, then the staging folder
    goes. Idempotent, so a run killed half-way through is finished by the next one."""
    import json

    for marker in sorted((dataset.root / STAGING_DIR).glob(f"ingest-*/{SWAP_FILE}")):
        staging = marker.parent
        spec = json.loads(marker.read_text())
        for t in spec["tables"]:
            new = staging / STAGED_TABLES / t
            if not new.exists():
                continue  # moved by the killed run already
            old = dataset.table_dir(t)
            if old.exists():
                shutil.rmtree(old)
            os.replace(new, old)
        if spec.get("manifest"):  # the manifest of those tables (a finishing run rewrites it)
            dataset.write_json("_runs/ingest.json", spec["manifest"])
        dataset.write_json(PLAN_FILE, {"plan_key": spec["plan_key"], "target": "."})
        marker.unlink()


def prepare_output(dataset: Dataset, plan_key: str) -> tuple[Dataset, bool]:
    """Where this run writes its tables, and whether it resumes the same plan (keeping its
    committed shards). The tables of a completed earlier run (it has a manifest) are never
    removed before the new ones are complete: a new plan then writes into its staging
    folder and ``finish_pending_swap`` replaces them at the end; a failing run leaves them
    and their manifest as they were. Without a completed run, tables are written in place."""
    import json

    plan_path = dataset.root / PLAN_FILE
    own = Path(STAGING_DIR) / f"ingest-{plan_key[:16]}"
    staging_tables = own / STAGED_TABLES
    plan = {}
    if plan_path.exists():
        try:
            plan = json.loads(plan_path.read_text())
        except ValueError:
            pass
    same = plan.get("plan_key") == plan_key
    for old in (dataset.root / STAGING_DIR).glob("ingest-*"):  # other plans' files never resume
        if not (same and old == dataset.root / own):
            shutil.rmtree(old, ignore_errors=True)
    if same:
        where = plan.get("target", ".")
        return (dataset if where == "." else Dataset(dataset.root / where)), True
    if (dataset.runs_dir() / "ingest.json").exists() and any(dataset.table_dir(t).exists() for t in INGEST_TABLES):
        dataset.write_json(PLAN_FILE, {"plan_key": plan_key, "target": str(staging_tables)})
        return Dataset(dataset.root / staging_tables), False
    for t in INGEST_TABLES:  # leftovers of a run that never completed
        d = dataset.table_dir(t)
        if d.exists():
            shutil.rmtree(d)
    dataset.write_json(PLAN_FILE, {"plan_key": plan_key, "target": "."})
    return dataset, False
