"""Input readers: every supported pool format becomes raw Arrow batches (see ``base``).

Formats: parquet (incl. DataComp metadata and img2dataset's per-shard Parquet), csv, tsv,
jsonl, coco (COCO captions JSON), webdataset (tars), imagefolder (images + captions file),
img2dataset (an img2dataset output folder: its per-shard Parquet files). A folder is read
file by file, each with its own reader (``scan_inputs``); every file not read is reported
with its outcome (unreadable, unsupported, covered by an img2dataset Parquet file).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import IMAGE_EXTS, RAW_SCHEMA, REJECT_REASONS, ColumnMap, ReaderOptions
from curate.readers.coco import is_coco
from curate.readers.imagefolder import CAPTIONS_FILES

FORMATS = ("parquet", "datacomp", "csv", "tsv", "jsonl", "coco", "webdataset", "img2dataset", "imagefolder")
_EXT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
        ".ndjson": "jsonl", ".tar": "webdataset", ".json": "coco"}
# What a forced --format reads from a folder (by file format); image folders are one unit.
_FORCED_READS = {"parquet": "parquet", "datacomp": "parquet", "img2dataset": "parquet", "csv": "csv",
                 "tsv": "tsv", "jsonl": "jsonl", "coco": "coco", "webdataset": "webdataset"}

# Outcomes of an input file that is not read (counted in the run manifest, never silent).
UNREADABLE = "unreadable"    # no permission, broken link, folder that cannot be listed, undecodable name
UNSUPPORTED = "unsupported"  # no reader for this kind of file (or not the --format given)
UNCAPTIONED = "uncaptioned"  # an image in an image folder whose captions file names it in no row
COVERED = "covered"          # img2dataset: a shard's tar/folder/stats, whose samples its Parquet file holds;
                             # DataComp: a shard's .npz, read by the embeddings import


@dataclass(frozen=True)
class SkippedFile:
    path: str
    outcome: str  # UNREADABLE | UNSUPPORTED | UNCAPTIONED | COVERED
    detail: str

    def to_dict(self) -> dict:
        return {"path": self.path, "outcome": self.outcome, "detail": self.detail}


@dataclass
class InputScan:
    """What ingest reads: ``files`` as (path, format) in dedup-priority order, and every
    other file it found with the reason it is not read. ``excluded``: folders left out
    because they are the output dataset. ``listings``: an image folder on a store -> its
    objects' (URI, size, modification time ns), the output left out (listed once: the plan
    fingerprints the folder from it)."""

    files: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    listings: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _name_problem(path: Path) -> str | None:
    try:
        str(path).encode("utf-8")
        return None
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 (rename the file)"


def _unreadable(path: Path) -> str | None:
    """Why ``path`` (a file found or given) cannot be read, or None. Never opens anything
    that is not a regular file (a FIFO would block)."""
    problem = _name_problem(path)
    if problem:
        return problem
    try:
        st = os.stat(path)
    except OSError as e:
        if path.is_symlink():
            return f"broken symbolic link ({e.strerror})"
        return e.strerror or str(e)
    if not stat.S_ISREG(st.st_mode):
        return None  # handled by the caller (folders) or skipped as unsupported
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def _walk(root: Path, exclude: list[Path], scan: InputScan) -> list[Path]:
    """Every non-hidden entry under ``root`` that is not a folder (files, links, specials),
    sorted as paths; folders that cannot be listed become unreadable outcomes, links to
    folders unsupported ones (never followed), and excluded folders are left out."""
    found: list[Path] = []

    def on_error(e: OSError) -> None:
        where = Path(e.filename) if e.filename else root
        scan.skipped.append(SkippedFile(str(where), UNREADABLE, f"cannot list the folder ({e.strerror or e})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            if _hidden(d):
                continue
            if any(_within(sub.resolve(), x) for x in exclude):
                scan.excluded.append(str(sub))
                continue
            if sub.is_symlink():
                found.append(sub)  # a link to a folder: reported, not followed (no loops)
                continue
            keep.append(d)
        dirnames[:] = keep
        found.extend(here / f for f in filenames if not _hidden(f))
    return sorted(found)


def _classify_folder(root: Path, entries: list[Path]) -> str:
    """"imagefolder" when the folder holds images and no Parquet or tar files (then the
    images with their captions file or sidecars are the input); else "files": each data
    file read by its own reader."""
    exts = {p.suffix.lower() for p in entries}
    if exts & IMAGE_EXTS and not exts & {".parquet", ".pq", ".tar"}:
        return "imagefolder"
    return "files"


def format_of_name(path: str) -> str | None:
    """The format a file's extension tells (None: it does not)."""
    return _EXT.get(Path(path).suffix.lower())


def detect_format(path: str) -> str:
    """The format of a file (by extension), or of a folder: "imagefolder", the one format
    all its data files share ("img2dataset" for Parquet + tars), or "mixed"."""
    p = Path(path)
    if p.is_dir():
        scan = InputScan()
        _folder_files(p, None, [], scan, None)
        fmts = {f for _, f in scan.files}
        if any(s.outcome == COVERED for s in scan.skipped) and fmts <= {"parquet"}:
            return "img2dataset"
        if len(fmts) == 1:
            return fmts.pop()
        return "mixed" if fmts else "imagefolder"
    fmt = _EXT.get(p.suffix.lower())
    if fmt is None:
        raise InputFileError(path, f"cannot tell the format from the extension {p.suffix!r}; pass --format ({', '.join(FORMATS)})")
    return fmt


_IN_IMAGE_FOLDER = "inside an image folder (images with their captions file or .txt sidecars); ingest it on its own"


def _image_folder(root: Path, entries, scan: InputScan, captions: str | None) -> None:
    """An image folder is one input; its files other than images and captions are counted."""
    caption_files = {root / n for n in CAPTIONS_FILES}
    used = Path(captions) if captions else next((c for c in sorted(caption_files) if c in entries), None)
    why = _unreadable(used) if used is not None else None
    if why:
        scan.skipped.append(SkippedFile(str(root), UNREADABLE, f"its captions file {used} cannot be read ({why})"))
        return
    scan.files.append((str(root.resolve()), "imagefolder"))
    # compared resolved: --captions may name the file another way than the walk does
    resolved = {str(e.resolve()): e for e in entries}
    unread = _unread_caption_files(list(resolved), str(used.resolve()) if used is not None else None,
                                   {str(c.resolve()) for c in caption_files})
    unread = {resolved[f]: SkippedFile(str(resolved[f]), o.outcome, o.detail) for f, o in unread.items()}
    for e in entries:
        ext = e.suffix.lower()
        if e in unread:
            scan.skipped.append(unread[e])
            continue
        if ext in IMAGE_EXTS or ext == ".txt" or e in caption_files:
            continue  # the image folder's own files (unreadable images become row rejects)
        why = _unreadable(e)
        if why:
            scan.skipped.append(SkippedFile(str(e), UNREADABLE, why))
        else:
            scan.skipped.append(SkippedFile(str(e), UNSUPPORTED, _IN_IMAGE_FOLDER))


def _store_image_folder(root: str, exclude: list[str], scan: InputScan,
                        objects: list[tuple[str, int, int]] | None = None, captions: str | None = None) -> None:
    """An image folder on a store (read in place) is one input, as a local one is: its objects
    other than images and captions are counted, an output dataset inside it left out.
    ``objects``: its listing, when the caller has it."""
    from curate import storage

    base = root.rstrip("/")
    scan.files.append((base, "imagefolder"))
    caption_files = {f"{base}/{n}" for n in CAPTIONS_FILES}
    listing = scan.listings[base] = []
    for f, size, mtime_ns in storage.list_objects(base) if objects is None else objects:
        inside = next((x for x in exclude if f.startswith(x)), None)
        if inside is not None:
            if inside.rstrip("/") not in scan.excluded:
                scan.excluded.append(inside.rstrip("/"))
            continue
        listing.append((f, size, mtime_ns))
    used = captions or next((c for c in sorted(caption_files) if any(f == c for f, _, _ in listing)), None)
    unread = _unread_caption_files([f for f, _, _ in listing], used, caption_files)
    for f, _, _ in listing:
        ext = Path(f).suffix.lower()
        if f in unread:
            scan.skipped.append(unread[f])
        elif not (ext in IMAGE_EXTS or ext == ".txt" or f in caption_files):
            scan.skipped.append(SkippedFile(f, UNSUPPORTED, _IN_IMAGE_FOLDER))


def _unread_caption_files(files: list[str], used: str | None, caption_files: set[str]) -> dict[str, SkippedFile]:
    """An image folder's caption files the reader does not read, by path: with a captions file
    (``used``), the other ``captions.*`` files and every ``.txt``; without one, a ``.txt`` that is
    no image's sidecar (an image ``x.jpg`` reads ``x.txt`` beside it, the suffix as written)."""
    out = {}
    if used is not None:
        name = used.replace("\\", "/").rsplit("/", 1)[-1]
        for f in files:
            if f in caption_files and f != used:
                out[f] = SkippedFile(f, UNSUPPORTED, f"another captions file: the folder's captions are read from "
                                                     f"{name} (--captions names the one to read)")
            elif f.lower().endswith(".txt") and f != used:
                out[f] = SkippedFile(f, UNSUPPORTED, f"a .txt caption: the folder's captions are read from {name}, "
                                                     "not from .txt sidecars")
        return out
    sidecars = {f[: len(f) - len(PurePosixPath(f).suffix)] + ".txt" for f in files
                if PurePosixPath(f).suffix.lower() in IMAGE_EXTS}
    for f in files:
        if f.lower().endswith(".txt") and f not in sidecars:
            out[f] = SkippedFile(f, UNSUPPORTED, "a .txt with no image of its name beside it (an image x.jpg's "
                                                 "caption is x.txt)")
    return out


def _shard_stems(files: list[tuple[str, str]], fmt: str | None) -> set[tuple[str, str]]:
    """(folder, stem) of every Parquet file among (folder, name) pairs: an img2dataset shard
    (NNNNN.parquet holds every sample of its shard; the shard's tar, its files folder and its
    stats are the same samples again) or a DataComp shard (its .npz holds the embeddings)."""
    if fmt not in (None, "img2dataset", "parquet", "datacomp"):
        return set()  # e.g. --format webdataset: the tars are what was asked for
    return {(parent, Path(name).stem) for parent, name in files if Path(name).suffix.lower() in (".parquet", ".pq")}


def _files_folder_outcome(owner: str) -> SkippedFile:
    """An img2dataset shard's files folder (reported once for all its files)."""
    return SkippedFile(owner, COVERED, f"img2dataset shard files: their samples are read from "
                                       f"{owner.rstrip('/').rsplit('/', 1)[-1]}.parquet")


_DATACOMP_HINT = ("a DataComp shard's embeddings beside {stem}.parquet, not read without --format datacomp "
                  "(which imports them, and reads the pool as DataComp's scripts do)")
_NPZ_COVERED = "not sample rows: the embeddings of {stem}.parquet, read by the DataComp import into embeddings/<model>"


def _explicit_npz(path: str, fmt: str | None, siblings_exist: bool) -> SkippedFile | None:
    """An ``.npz`` named as an input (a shell glob of a DataComp folder): beside its shard's
    Parquet file it is that shard's embeddings (covered with --format datacomp), not a file to
    read as Parquet."""
    if not path.lower().endswith(".npz") or fmt not in (None, "datacomp") or not siblings_exist:
        return None
    stem = path.replace("\\", "/").rsplit("/", 1)[-1][:-len(".npz")]
    if fmt == "datacomp":
        return SkippedFile(path, COVERED, _NPZ_COVERED.format(stem=stem))
    return SkippedFile(path, UNSUPPORTED, _DATACOMP_HINT.format(stem=stem))


def _shard_file_outcome(path: str, parent: str, name: str, fmt: str | None,
                        stems: set[tuple[str, str]]) -> SkippedFile | None:
    """The outcome of a file beside a shard's Parquet file that the Parquet file covers, or None."""
    ext = Path(name).suffix.lower()
    stem = name[: -len("_stats.json")] if name.endswith("_stats.json") else Path(name).stem
    if (parent, stem) not in stems:
        return None
    if fmt == "datacomp" and ext == ".npz":
        return SkippedFile(path, COVERED, _NPZ_COVERED.format(stem=stem))
    if fmt is None and ext == ".npz":
        return SkippedFile(path, UNSUPPORTED, _DATACOMP_HINT.format(stem=stem))
    if ext in (".tar", ".json"):
        return SkippedFile(path, COVERED, f"img2dataset shard {'stats' if ext == '.json' else 'tar'}: "
                                          f"its samples are read from {stem}.parquet")
    return None


def _reader_of(read_path: str, path: str, fmt: str | None) -> tuple[str | None, SkippedFile | None]:
    """(the format a folder's file is read as, None), or (None, its unsupported outcome): the
    extension's reader (a ``.json`` only when it is COCO), and with ``--format`` that reader only."""
    file_fmt = _EXT.get(Path(path).suffix.lower())
    if file_fmt == "coco" and not is_coco(read_path):
        file_fmt = None
    wanted = _FORCED_READS.get(fmt) if fmt else file_fmt
    if file_fmt is None or file_fmt != wanted:
        what = f"--format {fmt} was given" if fmt and file_fmt else "no reader for this kind of file"
        return None, SkippedFile(path, UNSUPPORTED, what)
    return file_fmt, None


def _folder_files(root: Path, fmt: str | None, exclude: list[Path], scan: InputScan, captions: str | None) -> None:
    entries = _walk(root, exclude, scan)
    if fmt == "imagefolder" or (fmt is None and _classify_folder(root, entries) == "imagefolder"):
        _image_folder(root, entries, scan, captions)
        return
    shard_stems = _shard_stems([(str(e.parent), e.name) for e in entries], fmt)
    covered_dirs = {str(Path(parent) / stem) for parent, stem in shard_stems}
    reported_dirs: set[str] = set()
    for e in entries:
        owner = next((str(d) for d in e.parents if str(d) in covered_dirs), None) if covered_dirs else None
        if owner is not None:
            if owner not in reported_dirs:
                reported_dirs.add(owner)
                scan.skipped.append(_files_folder_outcome(owner))
            continue
        covered = _shard_file_outcome(str(e), str(e.parent), e.name, fmt, shard_stems)
        if covered is not None:
            scan.skipped.append(covered)
            continue
        why = _unreadable(e)
        if why:
            scan.skipped.append(SkippedFile(str(e), UNREADABLE, why))
            continue
        if e.is_symlink() and e.is_dir():
            scan.skipped.append(SkippedFile(str(e), UNSUPPORTED, "a link to a folder is not followed; pass the folder itself"))
            continue
        if not e.is_file():
            scan.skipped.append(SkippedFile(str(e), UNSUPPORTED, "not a regular file"))
            continue
        file_fmt, unsupported = _reader_of(str(e), str(e), fmt)
        if unsupported is not None:
            scan.skipped.append(unsupported)
            continue
        scan.files.append((str(e.resolve()), file_fmt))


def _listed_objects(items: list[str], fmt: str | None, sources: dict[str, str], scan: InputScan) -> set[str]:
    """The inputs listed from a store's prefix or glob are a folder's files: the same outcomes
    as ``_folder_files`` gives a local folder's (an img2dataset shard's tar, stats and files
    folder and a DataComp shard's .npz covered by the shard's Parquet file beside them; a file
    the format does not read unsupported), each named by its URI (``sources``: a local copy's).
    Appends those outcomes to ``scan``; returns the items not to read."""
    names = {item: sources.get(item, item) for item in items}
    split = {item: name.rsplit("/", 1) for item, name in names.items()}
    stems = _shard_stems(list(split.values()), fmt)
    owners = {f"{parent}/{stem}" for parent, stem in stems}
    reported: set[str] = set()
    skip = set()
    for item in items:
        name, (parent, base) = names[item], split[item]
        parts = name.split("/")
        owner = next((o for o in ("/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if o in owners), None)
        if owner is not None:
            if owner not in reported:
                reported.add(owner)
                scan.skipped.append(_files_folder_outcome(owner))
            skip.add(item)
            continue
        outcome = _shard_file_outcome(name, parent, base, fmt, stems) or _reader_of(item, name, fmt)[1]
        if outcome is not None:
            scan.skipped.append(outcome)
            skip.add(item)
    return skip


def scan_inputs(paths: list[str], fmt: str | None = None, exclude: list[str] = (),
                captions: str | None = None, sources: dict[str, str] | None = None,
                listed: set[str] | frozenset = frozenset(), folders: dict | None = None) -> InputScan:
    """Every input file with the reader it gets, and every file found but not read with its
    outcome (see ``InputScan``). Folders are read file by file, each with its own format
    (Parquet, CSV, TSV, JSONL, COCO JSON, WebDataset tars; img2dataset output), or as one
    image folder; so are the ``listed`` inputs (objects a store's prefix or glob expanded to,
    or their local copies, named by ``sources``). ``folders``: image folders on a store with
    their listings (``ingest.plan.find_image_folders``). An input inside an ``exclude`` folder
    (the output) is an error; such a folder inside an input folder is left out."""
    if fmt is not None and fmt not in FORMATS:
        raise InputFileError(str(fmt), f"unknown format; choose one of {', '.join(FORMATS)}")
    from curate import storage

    excluded = [Path(x).resolve() for x in exclude if not storage.is_uri(x)]
    excluded_uris = [storage.resolve(x).uri.rstrip("/") + "/" for x in exclude if storage.is_uri(x)]
    scan = InputScan()
    not_read = (_listed_objects([p for p in paths if p in listed], fmt, sources or {}, scan)
                if listed and fmt != "imagefolder" else set())
    for raw in paths:
        if raw in not_read:
            continue
        if storage.is_uri(raw):  # an object read in place (``fetch_inputs(in_place=...)``)
            inside = next((x for x in excluded_uris if raw.startswith(x)), None)
            if inside is not None:
                raise InputFileError(raw, f"is inside the output dataset {inside.rstrip('/')}: ingest would read its "
                                          "own output; write the output elsewhere")
            if folders and raw in folders:  # an image folder read in place, as listed to classify it
                _store_image_folder(raw, excluded_uris, scan, folders[raw], captions)
                continue
            if not storage.is_file(raw):
                if fmt in (None, "imagefolder") and storage.is_dir(raw):  # an image folder read in place
                    _store_image_folder(raw, excluded_uris, scan, captions=captions)
                    continue
                raise InputFileError(raw, "no such object")
            npz = _explicit_npz(raw, fmt, raw.lower().endswith(".npz") and storage.is_file(raw[:-4] + ".parquet"))
            if npz is not None:
                scan.skipped.append(npz)
                continue
            f = fmt or detect_format(raw)
            scan.files.append((raw, "parquet" if f in ("datacomp", "img2dataset") else f))
            continue
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise InputFileError(raw, "no such file or folder")
        real = p.resolve()
        inside = next((x for x in excluded if _within(real, x)), None)
        if inside is not None:
            raise InputFileError(raw, f"is inside the output dataset {inside}: ingest would read its own output; "
                                      "write the output elsewhere")
        if p.is_dir():
            _folder_files(p, fmt, excluded, scan, captions)
            continue
        why = _unreadable(p)
        if why:
            scan.skipped.append(SkippedFile(str(p), UNREADABLE, why))
            continue
        if not p.is_file():
            scan.skipped.append(SkippedFile(str(p), UNSUPPORTED, "not a regular file"))
            continue
        npz = _explicit_npz(raw, fmt, p.with_suffix(".parquet").is_file())
        if npz is not None:
            scan.skipped.append(npz)
            continue
        f = fmt or detect_format(raw)
        scan.files.append((str(real), "parquet" if f in ("datacomp", "img2dataset") else f))
    return scan


def expand_inputs(paths: list[str], fmt: str | None) -> list[tuple[str, str]]:
    """(file, format) pairs that ``scan_inputs`` would read (its skipped files aside)."""
    return scan_inputs(paths, fmt).files


def columns_read(path: str, fmt: str, options: ReaderOptions, schema: pa.Schema | None = None
                 ) -> dict[str, str] | None:
    """The columns a Parquet, CSV or TSV input's url and caption are read from (found in its
    footer or first records, as its reader finds them), so a run can say which it picked among
    the names it tries; None for other formats, or where the reader itself will say what is wrong.
    ``schema``: a Parquet file's, when the caller has its footer already."""
    from curate.errors import InputFileError

    try:
        if fmt in ("parquet", "datacomp", "img2dataset"):
            from curate.readers.parquet import open_parquet, resolve_columns

            schema = schema if schema is not None else open_parquet(path).schema_arrow
            cols = resolve_columns(path, schema, options)
            return {"url": cols["url"], "text": cols["text"]}
        if fmt in ("csv", "tsv"):
            from curate.readers.delimited import delimited_columns

            return delimited_columns(path, options, "," if fmt == "csv" else "\t")
    except (InputFileError, OSError, ValueError):
        return None
    return None


def read_file_raw(path: str, options: ReaderOptions, fmt: str | None = None, **slice_args) -> Iterator[pa.RecordBatch]:
    """Raw batches of one input (a file, or an image folder)."""
    fmt = fmt or detect_format(path)
    if fmt in ("parquet", "datacomp", "img2dataset"):
        from curate.readers.parquet import read_parquet

        return read_parquet(path, options, **slice_args)
    if fmt == "csv":
        from curate.readers.delimited import read_delimited

        return read_delimited(path, options, ",")
    if fmt == "tsv":
        from curate.readers.delimited import read_delimited

        return read_delimited(path, options, "\t")
    if fmt == "jsonl":
        from curate.readers.jsonl import read_jsonl

        return read_jsonl(path, options)
    if fmt == "coco":
        from curate.readers.coco import read_coco

        return read_coco(path, options)
    if fmt == "webdataset":
        from curate.readers.webdataset import read_webdataset

        return read_webdataset(path, options)
    if fmt == "imagefolder":
        from curate.readers.imagefolder import read_imagefolder

        return read_imagefolder(path, options, **slice_args)
    raise InputFileError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = ["RAW_SCHEMA", "REJECT_REASONS", "ColumnMap", "ReaderOptions", "FORMATS", "InputScan", "SkippedFile",
           "detect_format", "expand_inputs", "scan_inputs", "read_file_raw"]
