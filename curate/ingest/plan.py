"""The ingest plan: the job's settings, its inputs scanned and cut into tasks (a file, a slice
of row groups of a big Parquet file, or a slice of an image folder's rows), and the row
estimate ``--engine auto`` sizes it by."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from curate import storage
from curate.errors import DatasetError
from curate.ingest.shards import ROW_ID_BITS
from curate.ingest.stage import IngestRules
from curate.readers import InputScan, ReaderOptions, columns_read, scan_inputs
from curate.readers.imagefolder import plan_slices
from curate.readers.parquet import open_parquet, plan_parquet


# an image folder's rows a task: each row costs an image header read (and a sidecar), 0.1-1 ms
# from a local disk, tens of ms a request from a store, so far fewer rows than a Parquet task's
IMAGE_TASK_ROWS = 20_000


@dataclass
class IngestConfig:
    inputs: list[str]
    output: str
    format: str | None = None
    options: ReaderOptions = field(default_factory=ReaderOptions)
    rules: IngestRules = field(default_factory=IngestRules)
    rows_per_shard: int = 500_000
    task_rows: int = 250_000  # Parquet files are split into tasks of about this many rows
    sources: dict[str, str] = field(default_factory=dict)  # local copy -> the URI it was fetched from
    listed: set[str] = field(default_factory=set)  # inputs a store's prefix or glob expanded to (a folder's files)
    # image folders on a store -> their objects (URI, size, mtime ns), as listed to classify them
    store_folders: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)

    def params(self) -> dict:
        return {
            "inputs": [self.sources.get(i, i) for i in self.inputs],
            "format": self.format,
            "options": self.options.to_dict(),
            "rules": self.rules.to_dict(),
            "rows_per_shard": self.rows_per_shard,
            "task_rows": self.task_rows,
        }


def _uncaptioned_images(files: list[tuple[str, str]], cfg: IngestConfig, scan: InputScan) -> None:
    """An image folder's images that its captions file names in no row: found, not read, and
    counted (``UNCAPTIONED``), never left out in silence."""
    from curate.readers import UNCAPTIONED, SkippedFile
    from curate.readers.imagefolder import images_without_rows

    output = storage.resolve(cfg.output).uri if storage.is_uri(cfg.output) else str(Path(cfg.output).resolve())
    options = replace(cfg.options, exclude=[output])
    for path, fmt in files:
        if fmt == "imagefolder":
            captions, images = images_without_rows(path, options)
            scan.skipped += [SkippedFile(_as_given(str(p), cfg.inputs), UNCAPTIONED,
                                         f"named by no row of its captions file {_as_given(captions, cfg.inputs)}")
                             for p in images]


def _check_format_options(cfg: IngestConfig, files: list[tuple[str, str]]) -> None:
    """Options that only one kind of input reads are not taken in silence by the others."""
    if not files:
        return
    fmts = {fmt for _, fmt in files}
    o = cfg.options
    read = ", ".join(sorted(fmts))
    for flag, value in (("--captions", o.captions), ("--image-col", o.columns.image)):
        if value and "imagefolder" not in fmts:
            raise DatasetError(f"{flag} {value!r} applies to an image folder; no input is one (formats read: {read})")
    if o.header != "auto" and not fmts & {"csv", "tsv", "imagefolder"}:
        raise DatasetError(f"--header {o.header} applies to CSV/TSV files and an image folder's captions file; no "
                           f"input is one (formats read: {read})")


def _as_given(path: str, inputs: list[str]) -> str:
    """A local file found under an input, named from that input as the user wrote it (as the
    scan names the files it skips), not by its resolved path."""
    if storage.is_uri(path):
        return path
    for given in inputs:
        if not storage.is_uri(given):
            try:
                return str(Path(given) / Path(path).relative_to(Path(given).resolve()))
            except ValueError:
                continue
    return path


def plan_tasks(cfg: IngestConfig) -> tuple[list[dict], list[dict], InputScan]:
    """(tasks, input fingerprints, the scan with every file not read). File order (as given,
    folders sorted) fixes dedup priority. The output folder is never read as input."""
    scan = scan_inputs(cfg.inputs, cfg.format, exclude=[cfg.output], captions=cfg.options.captions,
                       sources=cfg.sources, listed=cfg.listed, folders=cfg.store_folders)
    files = scan.files
    _check_format_options(cfg, files)
    _uncaptioned_images(files, cfg, scan)
    if not files:
        if scan.skipped:
            first = scan.skipped[0]
            raise DatasetError(f"no readable input files in {cfg.inputs}: {len(scan.skipped)} skipped, the first "
                               f"{first.path}: {first.outcome}: {first.detail}")
        raise DatasetError(f"no input files found in {cfg.inputs}")
    if len(files) >= 1 << (63 - ROW_ID_BITS):
        raise DatasetError(f"{len(files):,} input files: ingest takes at most {(1 << (63 - ROW_ID_BITS)) - 1:,} "
                           "per run (merge small files or ingest in parts)")
    output = storage.resolve(cfg.output).uri if storage.is_uri(cfg.output) else str(Path(cfg.output).resolve())
    options = replace(cfg.options, exclude=[output])
    opts = options.to_dict()
    tasks, fingerprints = [], []
    for file_index, (path, fmt) in enumerate(files):
        source = cfg.sources.get(str(path), path)  # an input named by URI: the URI (``path`` the same, or a copy)
        fp = (_folder_fingerprint(path, options.exclude, scan.listings.get(path)) if fmt == "imagefolder"
              else object_fingerprint(source) if storage.is_uri(source) else local_file_fingerprint(path))
        fingerprints.append({**fp, "path": source, "format": fmt, "file_index": file_index})
        pf = open_parquet(path) if fmt == "parquet" else None  # its footer, read once for columns and tasks
        columns = columns_read(path, fmt, options, pf.schema_arrow if pf is not None else None)
        if columns is not None:  # recorded, and said when not the plain names (an alias picked)
            fingerprints[-1]["columns"] = columns
        base = {"path": path, "source": source, "format": fmt, "file_index": file_index, "options": opts,
                "rules": cfg.rules.to_dict()}
        if fmt == "imagefolder" and cfg.options.captions:
            captions = cfg.options.captions
            base["source"] = captions if storage.is_uri(captions) else str(Path(captions).resolve())
        if fmt == "parquet":
            for piece in plan_parquet(path, cfg.task_rows, pf):
                tasks.append({**base, "row_groups": piece["row_groups"], "first_row": piece["first_row"],
                              "rows_planned": piece["rows"]})
        elif fmt == "imagefolder":
            for first, end in plan_slices(path, options, IMAGE_TASK_ROWS, scan.listings.get(path)):
                tasks.append({**base, "rows": [first, end], "first_row": first})
        else:
            tasks.append(base)
    return tasks, fingerprints, scan


# formats whose readers take an object in place: Parquet by range reads (footer, row groups),
# the others streamed once from start to end (curate.storage.open_binary)
IN_PLACE_FORMATS = ("parquet", "datacomp", "img2dataset", "csv", "tsv", "jsonl", "coco", "webdataset")


def reads_in_place(uri: str, fmt: str | None) -> bool:
    """Whether ingest reads an input object in place rather than from a local copy: any file
    in a format above (``--format``, else the extension; with ``--format datacomp`` a shard's
    ``.npz`` too); a name whose format the extension does not tell is copied. (An image folder
    is read in place as a folder: ``find_image_folders``.)"""
    from curate.readers import format_of_name

    return (fmt or format_of_name(uri)) in IN_PLACE_FORMATS


def find_image_folders(items: list[str], fmt: str | None,
                       output: str | None = None) -> dict[str, list[tuple[str, int, int]]]:
    """The inputs that are image folders named by URI, read in place by the image folder
    reader (``fetch_inputs`` would list a folder into its objects, each read on its own), each
    with its listing (the scan reuses it). A URI folder is an image folder with ``--format
    imagefolder``, or, with no format, when it holds images and no Parquet or tar files (how a
    local folder is classified), ``output`` (the dataset, when inside the folder) left out as a
    local folder leaves it out."""
    from curate.readers import _classify_folder

    inside = storage.resolve(output).uri.rstrip("/") + "/" if output and storage.is_uri(output) else None
    found = {}
    for item in items:
        if not (storage.is_uri(item) and fmt in (None, "imagefolder") and not any(c in item for c in "*?[")):
            continue
        objects = storage.list_objects(item)  # empty: an object, not a folder
        files = [f for f, _, _ in objects if inside is None or not f.startswith(inside)]
        if files and (fmt == "imagefolder" or _classify_folder(Path(item), [Path(f) for f in files]) == "imagefolder"):
            found[storage.resolve(item).uri] = objects
    return found


def fetch_ingest_inputs(items: list[str], fmt: str | None, listed: set[str],
                        output: str | None = None) -> tuple[list[str], dict[str, str], dict]:
    """Ingest's inputs, in the order given: plain paths as they are; image folders named by URI
    as their URIs (read in place); other URIs through ``storage.fetch_inputs`` (objects in a
    format read in place as their URIs, others copied). Returns the inputs, each input's
    source name (``source_file``) and the image folders named by URI with their listings."""
    folders = find_image_folders(items, fmt, output)
    inputs, sources = [], {}
    for item in items:
        uri = storage.resolve(item).uri if storage.is_uri(item) else None
        if uri in folders:
            inputs.append(uri)
            sources[uri] = uri
            continue
        got, named = storage.fetch_inputs([item], in_place=lambda uri: reads_in_place(uri, fmt), listed=listed)
        inputs += got
        sources.update(named)
    return inputs, sources, folders


def object_fingerprint(uri: str) -> dict:
    """An input object's fingerprint without reading it: size and modification time (an object
    is rewritten whole, so a new version has a new time). Its ``version`` stands where a local
    file's SHA-256 does in the plan key (hashing a pool's objects would read all of them on the
    driver)."""
    from curate.storage.objects import file_info

    info = file_info(storage.resolve(uri))
    return {"path": uri, "bytes": info.size, "version": f"{info.size}:{info.mtime_ns}", "kind": "object"}


def local_file_fingerprint(path: str) -> dict:
    """A local input file's fingerprint without reading it: size and modification time in ns, as
    an object's (and as make or rsync tell a changed file). Hashing the content would read the
    whole pool on the driver, one file after another, before any task runs: 3 TB for DataComp's
    xlarge metadata, hours on a network file system."""
    st = os.stat(path)
    return {"path": str(path), "bytes": st.st_size, "version": f"{st.st_size}:{st.st_mtime_ns}", "kind": "file"}


def input_version(fp: dict) -> str:
    """What identifies an input in the plan key: its version (size and modification time), or
    the SHA-256 a run made before versions were used recorded."""
    return fp.get("version") or fp["sha256"]


# ``--engine auto`` sizes an ingest by its inputs (the dataset does not exist yet): text
# inputs by bytes, at this many a row (web alt-text rows in CSV/TSV/JSONL/COCO JSON take
# 100-300 bytes, so this errs towards more rows, i.e. towards Spark).
INPUT_BYTES_PER_ROW = 100


def estimate_input_rows(cfg: IngestConfig, stop_above: int | None = None) -> int:
    """Rows the inputs hold, without reading any data (docs/engine.md): Parquet files by
    their footers, WebDataset tars by their distinct keys (tar headers only), an image
    folder by its files, any other file by its size / ``INPUT_BYTES_PER_ROW`` (a tar object on a
    store too: its headers are spread through the whole object). ``stop_above``: counting stops
    once past it (a lower bound is then returned): ``--engine auto`` only asks whether the inputs
    are over ``CURATE_LOCAL_MAX_ROWS``, and a pool's tar headers are billions of reads."""
    import tarfile

    from curate.readers.parquet import open_parquet

    scan = scan_inputs(cfg.inputs, cfg.format, exclude=[cfg.output], captions=cfg.options.captions,
                       sources=cfg.sources, listed=cfg.listed, folders=cfg.store_folders)
    rows = 0
    for path, fmt in scan.files:
        if stop_above is not None and rows > stop_above:
            break
        p = Path(path)
        if fmt in ("parquet", "datacomp", "img2dataset"):
            rows += open_parquet(path).metadata.num_rows  # a broken file: its one-line error, now
        elif fmt == "imagefolder":
            rows += len(scan.listings[path]) if path in scan.listings else \
                sum(1 for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
        elif storage.is_uri(path):
            rows += -(-object_fingerprint(path)["bytes"] // INPUT_BYTES_PER_ROW)
        elif fmt == "webdataset":
            try:
                keys = set()
                with tarfile.open(path, "r:") as tar:
                    for m in tar:
                        if m.isfile():
                            keys.add(_tar_key(m.name))
                            if stop_above is not None and rows + len(keys) > stop_above:
                                break
                rows += len(keys)
            except (tarfile.TarError, OSError):  # the job reports it; size it as text
                rows += p.stat().st_size // INPUT_BYTES_PER_ROW
        else:
            rows += -(-p.stat().st_size // INPUT_BYTES_PER_ROW)
    return rows


def _tar_key(name: str) -> str:
    """WebDataset's sample key of a tar member: its path up to the first dot of its file name."""
    folder, _, base = name.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}"


def _folder_fingerprint(root: str, exclude: list[str], listing: list[tuple[str, int, int]] | None = None) -> dict:
    """An image folder's fingerprint over the files ingest may read (hidden names and the
    output left out): their names, sizes and modification times, nothing read (a folder on a
    store: from its listing, ``listing`` the scan's). A file whose facts cannot be read is
    fingerprinted by its error."""
    import hashlib

    h, size = hashlib.sha256(), 0
    if storage.is_uri(root):
        skip = [x.rstrip("/") + "/" for x in exclude]
        listing = storage.list_objects(root) if listing is None else listing
        for name, nbytes, mtime_ns in listing:
            if not any(name.startswith(x) for x in skip):
                size += nbytes
                h.update(f"{name[len(root.rstrip('/')) + 1:]}:{nbytes}:{mtime_ns}\n".encode())
        return {"path": root, "bytes": size, "version": h.hexdigest(), "kind": "folder"}
    skip = {Path(x) for x in exclude}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")) and (here / d).resolve() not in skip)
        for name in sorted(f for f in filenames if not f.startswith(("_", "."))):
            f = here / name
            try:
                st = f.stat()
                # the mode: a file made readable (or not) is read again, with a new outcome
                fact, size = f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode & 0o777:o}", size + st.st_size
            except OSError as e:
                fact = f"unreadable:{e.errno}"
            h.update(f"{f.relative_to(root).as_posix()}:{fact}\n".encode("utf-8", "surrogateescape"))
    return {"path": str(root), "bytes": size, "version": h.hexdigest(), "kind": "folder"}


def report_skipped(scan: InputScan, limit: int = 20) -> None:
    """One line per file not read (the first ``limit``; all are in the run manifest)."""
    from curate.progress import info

    for f in scan.skipped[:limit]:
        info(f"ingest: not reading {f.path}: {f.outcome}: {f.detail}")
    if len(scan.skipped) > limit:
        info(f"ingest: ... and {len(scan.skipped) - limit} more files not read (see _runs/ingest.json, skipped_files)")
    for d in scan.excluded:
        info(f"ingest: not reading {d}: it is the output dataset")
