"""The download job: samples -> image shards (img2dataset) -> the downloads table.

Layout inside the dataset::

    images/00000000.tar           WebDataset shard: <key>.jpg, <key>.txt (caption), <key>.json (meta, uid)
    images/00000000.parquet       img2dataset's per-shard results (one row per attempted sample;
                                  with the pool's face_bboxes when samples carry them)
    images/00000000_stats.json    img2dataset's per-shard counters; written last = the shard is complete
    downloads/part-*.parquet      one row per samples uid (schemas/downloads.yaml)

Shard numbers have 8 digits, as DataComp's download and resharder expect; a dataset whose
shards were written with another width (curate used 5 before) keeps that width.

Each run looks at the complete shards already there, downloads the uids no complete shard
holds (plus, with ``retry_failed``, the uids whose latest attempt failed) into new shards
numbered after the existing ones, then rebuilds the downloads table from every complete
shard (a uid's latest attempt wins; ``attempts`` counts them). A killed run therefore loses
only its incomplete shards, which the next run removes and redoes; a finished download
reruns as a no-op.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from curate import storage
from curate.download.faces import BLUR_MAP, FACE_BBOXES, write_blur_metadata_map
from curate.download.safety import DEFAULT_MAX_IMAGE_AREA, FetchPolicy
from curate.errors import CurateError, DatasetError
from curate.lock import dataset_lock
from curate.tables import Dataset

IMAGES = "images"
WORK = "_download"  # hidden: the uids to fetch (curate.download.todo), one part per image shard
SHARD_DIGITS = 8  # DataComp's download_upstream.py (oom_shard_count=8) and resharder.py ({:08d}.tar)
_STATS_RE = re.compile(r"^(\d+)_stats\.json$")

RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")


@dataclass
class DownloadOptions:
    """Everything that shapes a download. Defaults follow DataComp's download of its pools:
    keep the aspect ratio, shrink only images larger than 512 px on their longer side, keep the
    original JPEG bytes when no resize is needed."""

    image_size: int = 512
    resize_mode: str = "keep_ratio_largest"
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int | None = None  # None: 95 for jpg and webp, zlib level 6 for png (img2dataset needs 0-9)
    skip_reencode: bool = True
    min_image_size: int = 0
    max_image_area: float = DEFAULT_MAX_IMAGE_AREA
    max_aspect_ratio: float = math.inf
    samples_per_shard: int = 10_000
    thread_count: int = 64  # download threads per task
    processes_count: int = 0  # Spark tasks at once: 0 = the cluster's default parallelism
    timeout: float = 10.0  # per socket operation
    retries: int = 0  # extra attempts per URL inside a run
    subjob_size: int = 1000  # shards per Spark job (img2dataset's pyspark distributor)
    max_shard_retry: int = 1
    extract_exif: bool = False
    shard_digits: int | None = None  # None: the dataset's existing width, else SHARD_DIGITS
    policy: FetchPolicy = field(default_factory=FetchPolicy)

    def __post_init__(self) -> None:
        if self.encode_quality is None:
            self.encode_quality = 6 if self.encode_format == "png" else 95

    def check(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise CurateError(f"--resize-mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        if self.encode_format not in ("jpg", "png", "webp"):
            raise CurateError(f"--encode-format must be jpg, png or webp, got {self.encode_format!r}")
        for flag, value, least in (("--samples-per-shard", self.samples_per_shard, 1), ("--threads", self.thread_count, 1),
                                   ("--image-size", self.image_size, 1), ("--retries", self.retries, 0),
                                   ("--processes", self.processes_count, 0), ("--min-image-size", self.min_image_size, 0)):
            if value < least:  # each would fail every row or the job
                raise CurateError(f"{flag} must be >= {least}, got {value}")
        if self.shard_digits is not None and not 1 <= self.shard_digits <= 12:
            raise CurateError(f"--shard-digits must be between 1 and 12, got {self.shard_digits}")
        # each would fail every row (a zero timeout, no area) or the job (negative retries)
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise CurateError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if not self.max_image_area > 0:
            raise CurateError(f"--max-image-area must be a positive number of pixels, got {self.max_image_area}")
        if not self.max_aspect_ratio >= 1:
            raise CurateError(f"--max-aspect-ratio is longer side over shorter side, so at least 1; got "
                              f"{self.max_aspect_ratio}")
        top = 9 if self.encode_format == "png" else 100  # png's is zlib's compression level
        if not 0 <= self.encode_quality <= top:
            raise CurateError(f"--encode-quality must be between 0 and {top} for {self.encode_format}, got "
                              f"{self.encode_quality}")
        self.policy.check()


# ---------------------------------------------------------------- shard bookkeeping
def shard_name(shard_id: int, digits: int = SHARD_DIGITS) -> str:
    return f"{shard_id:0{digits}d}"


def _images_listing(dataset: Dataset, times: bool = False) -> dict[str, int]:
    """Name -> modification time (ns; 0 locally unless ``times``, which costs a stat per file)
    of every file in ``images/``: one listing of the folder or prefix (objects are whole: a
    stats object means a done shard)."""
    d = dataset.path(IMAGES)
    if dataset.remote:
        return {i.base_name: i.mtime_ns or 0 for i in storage.listing(storage.resolve(d))}
    if not d.is_dir():
        return {}
    import os

    return {e.name: e.stat().st_mtime_ns if times else 0 for e in os.scandir(d)}


def _complete_stems(dataset: Dataset, names=None) -> dict[int, str]:
    """Shard id -> file stem of every shard whose stats file exists (img2dataset writes it
    after the tar and parquet); ``names``: a listing already made (``_images_listing``)."""
    names = _images_listing(dataset) if names is None else names
    stems: dict[int, str] = {}
    for name in sorted(names):
        m = _STATS_RE.match(name)
        if m and f"{m.group(1)}.parquet" in names:
            i = int(m.group(1))
            if i in stems:
                raise DatasetError(f"{dataset.path(IMAGES)}: shards {stems[i]} and {m.group(1)} have the same "
                                   "number; remove one of them")
            stems[i] = m.group(1)
    return stems


def downloads_current(dataset: Dataset) -> bool:
    """Whether ``downloads`` was written after every complete shard finished. A run stopped
    after some of its shards completed and before it rewrote the table leaves their attempts
    (the latest ones) in the shards only; a retry set read from that table would fetch
    successes again, and a rerun with nothing to fetch would leave the table contradicting
    the shards. One listing of ``images/``, one look at each downloads shard."""
    if not dataset.has_table("downloads"):
        return False
    listed = _images_listing(dataset, times=True)
    done = [listed[f"{s}_stats.json"] for s in _complete_stems(dataset, listed).values()]
    if not done:
        return True
    table = min(storage.fingerprint(p)[1] for p in dataset.shards("downloads"))
    return table >= max(done)


def complete_shards(dataset: Dataset) -> list[int]:
    """Ids of shards whose stats file exists (img2dataset writes it after the tar and parquet)."""
    return sorted(_complete_stems(dataset))


def shard_digits(dataset: Dataset, requested: int | None = None) -> int:
    """Width of the dataset's shard numbers: that of its complete shards (5 for datasets made
    before curate followed DataComp's naming), else ``requested``, else 8 (DataComp's).

    A number too large for the width is written longer without a leading zero (img2dataset's
    ``{:0Nd}``), so the width is the shortest stem; any other mix of widths is an error.
    """
    stems = list(_complete_stems(dataset).values())
    if not stems:
        return requested or SHARD_DIGITS
    width = min(len(s) for s in stems)
    odd = next((s for s in stems if len(s) != width and s.startswith("0")), None)
    if odd is not None:
        raise DatasetError(f"{dataset.path(IMAGES)}: shard names of different widths ({odd} and "
                           f"{width}-digit ones); rename them to one width")
    if requested is not None and requested != width:
        raise CurateError(f"{dataset.path(IMAGES)} holds {width}-digit shards; --shard-digits {requested} "
                          f"would mix names (download into a new dataset to change the width)")
    return width


def datacomp_resharder_args(dataset: Dataset) -> list[str]:
    """Flags DataComp's resharder.py needs to read these shards, beyond ``-i/-o/-s``: the
    shard formats when they are not its 8-digit defaults, ``--num-shards`` when the numbering
    has gaps (its shard-count search assumes none), the blur map when there is one."""
    ids = complete_shards(dataset)
    if not ids:
        return []
    digits = shard_digits(dataset)
    args = []
    if digits != SHARD_DIGITS:
        args += ["--shard-format", f"{{:0{digits}d}}.tar", "--shard-stats-format", f"{{:0{digits}d}}_stats.json"]
    if ids != list(range(len(ids))):
        args += ["--num-shards", str(ids[-1] + 1)]
    blur_map = dataset.path(f"{IMAGES}/{BLUR_MAP}")
    if storage.exists(blur_map):
        args += ["--blur-metadata-map", str(blur_map)]
    return args


def remove_incomplete(dataset: Dataset) -> list[str]:
    """Delete shard files of killed runs (no stats file); returns their names."""
    d = storage.resolve(dataset.path(IMAGES))
    done = set(_complete_stems(dataset).values())
    removed = []
    for info in sorted(storage.listing(d), key=lambda i: i.base_name):
        name = info.base_name
        if info.type == pafs.FileType.File and not name.startswith((".", "_")):
            stem = name.split(".")[0].split("_")[0]
            if stem.isdigit() and stem not in done:
                storage.delete(d.join(name))
                removed.append(name)
    return removed


# ---------------------------------------------------------------- running img2dataset
def _make_downloader(dataset: Dataset, column_list: list[str], opts: DownloadOptions, digits: int):
    # img2dataset (and through it torch, albumentations, wandb) is imported only to download:
    # the shard layout above serves `stats`, `sql`, `embed`... without it
    # curate.download.fetch first: it turns off albumentations' update check (a request to
    # PyPI at import), which importing img2dataset would otherwise make
    from curate.download.fetch import SafeDownloader, SafeResizer  # isort: skip
    from img2dataset.writer import WebDatasetSampleWriter  # isort: skip

    resizer = SafeResizer(
        image_size=opts.image_size, resize_mode=opts.resize_mode, resize_only_if_bigger=opts.resize_only_if_bigger,
        encode_quality=opts.encode_quality, encode_format=opts.encode_format, skip_reencode=opts.skip_reencode,
        min_image_size=opts.min_image_size, max_image_area=opts.max_image_area,
        max_aspect_ratio=opts.max_aspect_ratio)
    return SafeDownloader(
        sample_writer_class=WebDatasetSampleWriter, resizer=resizer, thread_count=opts.thread_count,
        save_caption=True, extract_exif=opts.extract_exif, output_folder=str(dataset.path(IMAGES)),
        column_list=column_list, timeout=opts.timeout, number_sample_per_shard=opts.samples_per_shard,
        oom_shard_count=digits, compute_hash="sha256", verify_hash_type=None,
        encode_format=opts.encode_format, retries=opts.retries, user_agent_token=opts.policy.user_agent_token,
        # X-Robots-Tag is checked by the policy's opener (its grammar); img2dataset's parser is off
        disallowed_header_directives=None, policy=opts.policy,
        # face boxes reach the resizer (which keeps their frame; it does not blur)
        blurring_bbox_col=FACE_BBOXES if FACE_BBOXES in column_list else None)


def _run_img2dataset(dataset: Dataset, first_shard: int, carried: list[str], opts: DownloadOptions, executor,
                     digits: int = SHARD_DIGITS) -> None:
    """img2dataset's downloader over the todo parts the workers wrote in ``_download/input``, one
    part per image shard: each task reads its own part (``SafeDownloader.shard_file``), so the
    driver lists the parts and reads none (img2dataset's reader cut every part into shard files
    on the driver, a serial pass over the whole todo)."""
    if not dataset.remote:
        (dataset.root / IMAGES).mkdir(parents=True, exist_ok=True)
    storage.configure_fsspec()  # img2dataset writes through fsspec (a URI: with curate's settings)
    shards = todo_shards(dataset, first_shard)
    # img2dataset's reader's column order: the carried columns, then caption, then url
    downloader = _make_downloader(dataset, [*carried, "caption", "url"], opts, digits)
    # Spark: img2dataset's pyspark distributor; local: the same downloader in a plain loop
    executor.run_img2dataset(downloader, shards, opts.processes_count, opts.subjob_size, opts.max_shard_retry)


def todo_shards(dataset: Dataset, first_shard: int) -> list[tuple[int, str]]:
    """(image shard id, its todo part) for every part: part ``i`` is shard ``first_shard + i``
    (the parts are numbered from 0 without a gap, and listed in index order)."""
    from curate.download.todo import TODO_TABLE

    return [(first_shard + i, str(p)) for i, p in enumerate(dataset.shards(TODO_TABLE))]


@contextmanager
def download_lock(dataset: Dataset):
    """One writer per dataset at a time: a run removes other runs' unfinished shards."""
    with dataset_lock(dataset.root, create=True):
        yield


def run_download(dataset: Dataset, executor, opts: DownloadOptions | None = None,
                 retry_failed: bool = False, retry_classes: list[str] | None = None) -> dict:
    """Download the images of ``dataset``'s samples and write its downloads table.

    ``retry_failed`` re-attempts the uids whose latest attempt failed, only those whose
    ``error_class`` is in ``retry_classes`` when given (e.g. ``["timeout", "connection_error"]``);
    ``retry_classes`` alone implies ``retry_failed`` (it would otherwise retry nothing, silently).
    Returns the run's counts; the run manifest goes to ``_runs/download.json``.
    """
    from curate.manifest import RunManifest

    opts = opts or DownloadOptions()
    opts.check()
    retry_failed = retry_failed or bool(retry_classes)
    manifest = RunManifest("download", {**options_dict(opts), "retry_failed": retry_failed,
                                        "retry_classes": retry_classes,
                                        "engine": getattr(executor, "name", "?")})
    with download_lock(dataset):
        stats = _download(dataset, executor, opts, retry_failed, retry_classes, manifest)
    manifest["counts"] = stats
    manifest["outputs"] = {"downloads": str(dataset.table_dir("downloads")), "images": str(dataset.path(IMAGES))}
    # a run with nothing to do changed nothing: _runs/download.json stays the run that made the
    # shards and the table (its counts and options); the no-op is kept in _runs/history/
    manifest.write(dataset, current=not stats.get("skipped"))
    return stats


def _download(dataset: Dataset, executor, opts: DownloadOptions, retry_failed: bool,
              retry_classes: list[str] | None, manifest) -> dict:
    from curate.download.results import write_downloads_table  # they read this module's shard names
    from curate.download.todo import samples_frame, write_todo

    if not dataset.has_table("samples"):
        raise DatasetError(f"{dataset.root} has no samples table; run `curate ingest` first")
    removed = remove_incomplete(dataset)
    digits = shard_digits(dataset, opts.shard_digits)
    storage.remove_tree(dataset.path(WORK))
    try:
        samples = samples_frame(dataset, executor)
        n_samples = dataset.count("samples")
        current = downloads_current(dataset)
        if retry_failed and dataset.has_table("downloads") and not current:
            # the retry set is read from the table: first bring it to the shards' latest attempts
            with manifest.stage("downloads_table_before_retry"):
                write_downloads_table(dataset, executor, samples, n_samples)
            current = True
        todo, retried, carried = write_todo(dataset, executor, samples, retry_failed, retry_classes,
                                            opts.samples_per_shard)
        stats = {"to_download": todo, "retried": retried, "removed_incomplete_files": len(removed)}
        if todo == 0 and current and dataset.count("downloads") == n_samples:
            stats["skipped"] = True  # finished: nothing to fetch, table up to date
            stats["datacomp_resharder_args"] = datacomp_resharder_args(dataset)
            return stats
        if todo:
            done = complete_shards(dataset)
            first = (max(done) + 1) if done else 0
            with manifest.stage("img2dataset"):
                _run_img2dataset(dataset, first, carried, opts, executor, digits)
            stats["new_shards"] = [shard_name(i, digits) for i in complete_shards(dataset) if i >= first]
            stats["shards_not_completed"] = math.ceil(todo / opts.samples_per_shard) - len(stats["new_shards"])
        with manifest.stage("downloads_table"):
            stats.update(write_downloads_table(dataset, executor, samples, n_samples))
            write_blur_metadata_map(dataset)
        if todo and not stats["new_shards"]:  # every shard of the run failed (a read-only disk, ...)
            raise DatasetError(f"download: none of this run's {stats['shards_not_completed']} image shards "
                               f"completed (img2dataset's errors are above); their {todo:,} samples are "
                               "not_downloaded in the downloads table: fix the cause and rerun")
    finally:
        storage.remove_tree(dataset.path(WORK))
    stats["datacomp_resharder_args"] = datacomp_resharder_args(dataset)
    stats["skipped"] = False
    return stats


def options_dict(opts: DownloadOptions) -> dict:
    d = asdict(opts)
    return json.loads(json.dumps(d, default=str))

