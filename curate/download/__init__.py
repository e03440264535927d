"""Download sample images with img2dataset (pyspark distributor) into WebDataset shards,
with a uid-keyed downloads table and a crawler safety policy."""

from curate.download.job import DownloadOptions, complete_shards, run_download
from curate.download.results import write_downloads_table
from curate.download.safety import FetchPolicy, build_opener, robots_optout, user_agent
from curate.download.error_classes import classify_error

__all__ = ["DownloadOptions", "FetchPolicy", "build_opener", "classify_error", "write_downloads_table",
           "complete_shards", "robots_optout", "run_download", "user_agent"]
