"""Parameters of ``curate download``; ``options()`` is the job's ``DownloadOptions``."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from curate.params import JobParams, cli_extra


class DownloadParams(JobParams):
    # Defaults are the library's (DownloadOptions, FetchPolicy: DataComp's download of its pools);
    # tests/recipe/test_command_params.py keeps them equal.
    retry_failed: bool = Field(False, description="Also re-attempt the uids whose latest attempt failed; results "
                               "are merged.")
    retry_class: list[str] = Field([], description="Re-attempt only the failed uids of these error classes "
                                   "(repeatable, e.g. timeout, connection_error, http_error; implies --retry-failed).")

    @field_validator("retry_class")
    @classmethod
    def _known_classes(cls, value: list[str]) -> list[str]:
        from curate.download.error_classes import ERROR_CLASSES

        unknown = [c for c in value if c not in ERROR_CLASSES]
        if unknown:  # a typo would retry nothing, silently
            raise ValueError(f"retry_class {', '.join(map(repr, unknown))} is not an error class; the classes are "
                             f"{', '.join(ERROR_CLASSES)}")
        return value

    image_size: int = Field(512, ge=1, description="Target size in pixels for the resize mode.")
    resize_mode: str = Field("keep_ratio_largest", description="no, keep_ratio (shorter side = size), "
                             "keep_ratio_largest (longer side = size), center_crop, border.")
    resize_only_if_bigger: bool = Field(True, description="Only shrink; never upscale small images.",
                                        json_schema_extra=cli_extra(negative="--resize-always"))
    encode_format: str = Field("jpg", description="jpg, png or webp for stored images.")
    encode_quality: Optional[int] = Field(None, description="JPEG/WebP quality 0-100 (default 95); PNG: zlib "
                                          "compression level 0-9 (default 6).")
    skip_reencode: bool = Field(True, description="Keep the original bytes when no resize is needed and the format "
                                "matches.", json_schema_extra=cli_extra(negative="--always-reencode"))
    min_image_size: int = Field(0, ge=0, description="Images whose shorter side is below this fail as too_small.")
    max_image_area: float = Field(89_478_485, gt=0, description="Images with more pixels fail as too_large, checked from "
                                  "the header before decoding (decompression bombs).")
    max_aspect_ratio: float = Field(float("inf"), ge=1, description="Images more elongated than this fail as "
                                    "bad_aspect_ratio.")
    samples_per_shard: int = Field(10_000, ge=1, description="Samples per image shard (one Spark task each).")
    shard_digits: Optional[int] = Field(None, ge=1, le=12, description="Digits in shard names (default: the dataset's existing "
                                        "shards', else 8 = DataComp's 00000000.tar).")
    threads: int = Field(64, ge=1, description="Download threads per task.")
    processes: int = Field(0, ge=0, description="Concurrent tasks (0: the Spark default parallelism).")
    timeout: float = Field(10.0, gt=0, description="Seconds per socket operation.")
    max_seconds: float = Field(30.0, gt=0, description="Wall-clock limit for one whole request: connect, headers, "
                               "redirects and body.")
    max_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest response body accepted.")
    retries: int = Field(0, ge=0, description="Extra attempts per URL within this run, after an error another attempt "
                         "can change (timeout, connection error, HTTP 408/425/429/500/502/503/504); a 404, an "
                         "opt-out or a body that is no image is not asked again.")
    allow_private_addresses: bool = Field(False, description="Allow loopback, private, link-local and metadata "
                                          "addresses (trusted networks only).")
    allow_network: list[str] = Field([], description="Address or CIDR allowed despite the address block, optionally "
                                     "with a port or port range, repeatable (127.0.0.1/32, 127.0.0.1:8080, "
                                     "10.0.0.0/8:8000-8099, [::1]:8080).")
    allow_file_urls: bool = Field(False, description="Read file:// URLs from this machine's disk.")
    allow_store_prefix: list[str] = Field([], description="Read image URLs on object storage under this folder "
                                          "(s3://bucket/imgs/, gs://..., hdfs://...) with this run's storage "
                                          "settings, repeatable; other store URLs are refused.")
    user_agent_token: str = Field("curate", description="Our name in the User-Agent and in X-Robots-Tag user-agent "
                                  "directives.")
    disallow_directive: list[str] = Field(["noai", "noimageai"], description="X-Robots-Tag directives that forbid "
                                          "the download (repeatable).")

    def options(self):
        """The job's ``DownloadOptions`` (with its ``FetchPolicy``), checked by the library."""
        from curate.download import DownloadOptions, FetchPolicy

        policy = FetchPolicy(allow_private=self.allow_private_addresses, allow_networks=list(self.allow_network),
                             allow_file_urls=self.allow_file_urls,
                             allow_store_prefixes=list(self.allow_store_prefix), user_agent_token=self.user_agent_token,
                             disallowed_directives=list(self.disallow_directive), max_seconds=self.max_seconds,
                             max_bytes=self.max_bytes)
        opts = DownloadOptions(
            image_size=self.image_size, resize_mode=self.resize_mode, resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format, encode_quality=self.encode_quality, skip_reencode=self.skip_reencode,
            min_image_size=self.min_image_size, max_image_area=self.max_image_area,
            max_aspect_ratio=self.max_aspect_ratio, samples_per_shard=self.samples_per_shard,
            thread_count=self.threads, processes_count=self.processes, timeout=self.timeout, retries=self.retries,
            shard_digits=self.shard_digits, policy=policy)
        opts.check()
        return opts
