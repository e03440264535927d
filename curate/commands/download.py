"""`curate download`: fetch every sample's image with img2dataset into WebDataset shards."""

from __future__ import annotations

import json
import typer

from curate.commands._common import open_executor, require_tables
from curate.commands._jobcli import Common, JobRun, job_command
from curate.lock import hold_dataset_lock
from curate.params.download import DownloadParams


DIRECT_SCHEMES = ("s3", "gs")  # a dataset URI the download reads and writes in place (others: a working copy)


def blocked_hint(failed_by_class: dict[str, int]) -> str | None:
    """What to do when the policy refused rows: a line for a private or loopback server, one for
    store URLs outside every allowed folder, one for local files."""
    lines = []
    n = failed_by_class.get("blocked_address", 0)
    if n:
        lines.append(f"{n:,} rows were refused by the address policy (private, loopback or link-local host); for a "
                     "server you trust, rerun with --retry-failed --allow-network CIDR (e.g. --allow-network "
                     "127.0.0.1/32)")
    n = failed_by_class.get("blocked_store_url", 0)
    if n:
        lines.append(f"{n:,} rows name objects on a store (s3://, gs://, ...) outside every --allow-store-prefix "
                     "folder; for a folder you trust, rerun with --retry-failed --allow-store-prefix s3://BUCKET/FOLDER/")
    n = failed_by_class.get("blocked_file_url", 0)
    if n:
        lines.append(f"{n:,} rows name local files (file://, as an image folder's ingest writes them); to read "
                     "them, rerun with --retry-failed --allow-file-urls")
    return "\n".join(lines) or None


def download(run: JobRun, p: DownloadParams) -> None:
    from curate.download import run_download
    from curate.progress import info
    from curate.tables import Dataset
    from curate.tables.publish import publish_working_copies, working_copy

    from curate import storage

    opts = p.options()
    dataset = run.dataset
    if storage.is_uri(dataset) and storage.resolve(dataset).scheme not in DIRECT_SCHEMES:
        # img2dataset writes through fsspec, which has no client here for other stores: fetched
        # here, published back below (docs/storage.md)
        dataset = working_copy(dataset, run.master)
    ds = Dataset(dataset)
    hold_dataset_lock(dataset)  # one writer per dataset
    require_tables(dataset, {"samples": "curate ingest"}, remote_ok=True)
    executor = open_executor(run.engine, run.master, run.conf, run.app_name, dataset=dataset)
    stats = run_download(ds, executor, opts, retry_failed=p.retry_failed, retry_classes=list(p.retry_class) or None)
    publish_working_copies()
    if stats.get("skipped"):
        info("download: nothing to do (every sample has a result in a complete shard)")
        if stats.get("datacomp_resharder_args"):
            info("DataComp's resharder.py reads these shards with: " + " ".join(stats["datacomp_resharder_args"]))
        return
    info(f"download: {stats['success']} success, {stats['failed']} failed of {stats['samples']} samples "
         f"({stats['to_download']} attempted this run)")
    if stats["failed_by_class"]:
        info("failed by class: " + json.dumps(stats["failed_by_class"]))
    if stats.get("shards_not_completed"):
        info(f"warning: {stats['shards_not_completed']} of this run's image shards did not complete (img2dataset's "
             "errors are above); their samples are not_downloaded, and a rerun fetches them")
    hint = blocked_hint(stats["failed_by_class"])
    if hint:
        info(hint)
    if stats.get("datacomp_resharder_args"):
        info("DataComp's resharder.py reads these shards with: " + " ".join(stats["datacomp_resharder_args"]))


def register(app: typer.Typer) -> None:
    app.command("download")(job_command(
        DownloadParams, download, app_name="curate-download",
        common=Common(None, dataset_help="Dataset folder or URI holding a samples table (from `curate ingest`).", subset=False,
                      output=False, storage=True, lock_first=False),  # the body locks its working copy
        help="Download DATASET's images into DATASET/images/*.tar and write DATASET/downloads.\n\n"
        "Every samples uid gets one downloads row: success (sha256, sizes, shard, key) or failed (error class and "
        "message). Reruns download only what no complete shard holds."))
