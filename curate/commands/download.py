"""`curate download`: fetch every sample's image with img2dataset into WebDataset shards."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor, require_tables, use_storage_options
from curate.lock import hold_dataset_lock


def blocked_hint(failed_by_class: dict[str, int]) -> str | None:
    """One line saying what to do when the address policy refused rows (a private or loopback server)."""
    n = failed_by_class.get("blocked_address", 0)
    if not n:
        return None
    return (f"{n:,} rows were refused by the address policy (private, loopback or link-local host); for a server "
            "you trust, rerun with --retry-failed --allow-network CIDR (e.g. --allow-network 127.0.0.1/32)")


# register and download are over 60 lines by download's signature (its option list), not their bodies.
def register(app: typer.Typer) -> None:
    @app.command("download")
    def download(
        dataset: str = typer.Argument(..., help="Dataset folder holding a samples table (from `curate ingest`)."),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Also re-attempt the uids whose latest attempt failed; results are merged."),
        retry_class: List[str] = typer.Option([], "--retry-class", help="With --retry-failed: only these error classes (repeatable, e.g. timeout, connection_error, http_error)."),
        image_size: int = typer.Option(512, "--image-size", help="Target size in pixels for the resize mode."),
        resize_mode: str = typer.Option("keep_ratio_largest", "--resize-mode", help="no, keep_ratio (shorter side = size), keep_ratio_largest (longer side = size), center_crop, border."),
        resize_only_if_bigger: bool = typer.Option(True, "--resize-only-if-bigger/--resize-always", help="Only shrink; never upscale small images."),
        encode_format: str = typer.Option("jpg", "--encode-format", help="jpg, png or webp for stored images."),
        encode_quality: int = typer.Option(95, "--encode-quality", help="JPEG/WebP quality (PNG: compression 0-9)."),
        skip_reencode: bool = typer.Option(True, "--skip-reencode/--always-reencode", help="Keep the original bytes when no resize is needed and the format matches."),
        min_image_size: int = typer.Option(0, "--min-image-size", help="Images whose shorter side is below this fail as too_small."),
        max_image_area: float = typer.Option(89_478_485, "--max-image-area", help="Images with more pixels fail as too_large, checked from the header before decoding (decompression bombs)."),
        max_aspect_ratio: float = typer.Option(float("inf"), "--max-aspect-ratio", help="Images more elongated than this fail as bad_aspect_ratio."),
        samples_per_shard: int = typer.Option(10_000, "--samples-per-shard", help="Samples per image shard (one Spark task each)."),
        shard_digits: Optional[int] = typer.Option(None, "--shard-digits", help="Digits in shard names (default: the dataset's existing shards', else 8 = DataComp's 00000000.tar)."),
        threads: int = typer.Option(64, "--threads", help="Download threads per task."),
        processes: int = typer.Option(0, "--processes", help="Concurrent tasks (0: the Spark default parallelism)."),
        timeout: float = typer.Option(10.0, "--timeout", help="Seconds per socket operation."),
        max_seconds: float = typer.Option(30.0, "--max-seconds", help="Wall-clock limit for one whole request: connect, headers, redirects and body."),
        max_bytes: int = typer.Option(50 * 1024 * 1024, "--max-bytes", help="Largest response body accepted."),
        retries: int = typer.Option(0, "--retries", help="Extra attempts per URL within this run."),
        allow_private: bool = typer.Option(False, "--allow-private-addresses", help="Allow loopback, private, link-local and metadata addresses (trusted networks only)."),
        allow_network: List[str] = typer.Option([], "--allow-network", help="Address or CIDR allowed despite the address block, optionally with a port or port range, repeatable (127.0.0.1/32, 127.0.0.1:8080, 10.0.0.0/8:8000-8099, [::1]:8080)."),
        allow_file_urls: bool = typer.Option(False, "--allow-file-urls", help="Read file:// URLs from this machine's disk."),
        user_agent_token: str = typer.Option("curate", "--user-agent-token", help="Our name in the User-Agent and in X-Robots-Tag user-agent directives."),
        disallow: List[str] = typer.Option(["noai", "noimageai"], "--disallow-directive", help="X-Robots-Tag directives that forbid the download (repeatable)."),
        master: Optional[str] = MasterOpt,
        conf: List[str] = ConfOpt,
        engine: str = EngineOpt,
        storage_option: List[str] = StorageOpt,
    ):
        """Download DATASET's images into DATASET/images/*.tar and write DATASET/downloads.

        Every samples uid gets one downloads row: success (sha256, sizes, shard, key) or failed
        (error class and message). Reruns download only what no complete shard holds.
        """
        from curate.download import DownloadOptions, FetchPolicy, run_download
        from curate.progress import info
        from curate.tables import Dataset

        policy = FetchPolicy(allow_private=allow_private, allow_networks=list(allow_network),
                             allow_file_urls=allow_file_urls, user_agent_token=user_agent_token,
                             disallowed_directives=list(disallow), max_seconds=max_seconds, max_bytes=max_bytes)
        opts = DownloadOptions(
            image_size=image_size, resize_mode=resize_mode, resize_only_if_bigger=resize_only_if_bigger,
            encode_format=encode_format, encode_quality=encode_quality, skip_reencode=skip_reencode,
            min_image_size=min_image_size, max_image_area=max_image_area, max_aspect_ratio=max_aspect_ratio,
            samples_per_shard=samples_per_shard, thread_count=threads, processes_count=processes,
            timeout=timeout, retries=retries, shard_digits=shard_digits, policy=policy)
        opts.check()
        from curate.tables.publish import publish_working_copies, working_copy

        use_storage_options(storage_option)
        dataset = working_copy(dataset, master)  # a URI: fetched here, published back below (docs/storage.md)
        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        require_tables(dataset, {"samples": "curate ingest"})
        executor = open_executor(engine, master, conf, "curate-download", dataset=dataset)
        stats = run_download(ds, executor, opts, retry_failed=retry_failed,
                             retry_classes=list(retry_class) or None)
        publish_working_copies()
        if stats.get("skipped"):
            info("download: nothing to do (every sample has a result in a complete shard)")
            return
        info(f"download: {stats['success']} success, {stats['failed']} failed of {stats['samples']} samples "
             f"({stats['to_download']} attempted this run)")
        if stats["failed_by_class"]:
            info("failed by class: " + json.dumps(stats["failed_by_class"]))
        hint = blocked_hint(stats["failed_by_class"])
        if hint:
            info(hint)
        if stats.get("datacomp_resharder_args"):
            info("DataComp's resharder.py reads these shards with: " + " ".join(stats["datacomp_resharder_args"]))
