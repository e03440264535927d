"""Image folders with captions: a folder of images plus a captions file (CSV/TSV/JSONL with
an image-file column and a caption column, e.g. Flickr8k's ``image,caption``), or a
sidecar ``name.txt`` beside each image. url = the image's ``file://`` URI; in a folder on a
store (``s3://bucket/imgs/``), read in place, the image's object URI.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import IMAGE_EXTS, ColumnMap, RawBuilder, ReaderOptions, iter_flush

IMAGE_CANDIDATES = ("image", "file_name", "filename", "file", "image_path", "path", "img")
# images of a folder on a store whose headers (and sidecar captions) are read at a time, each
# by its own requests: a store answers each in tens of ms, so one at a time would take hours
STORE_CHUNK = 1024


# bytes of an object read for its image header: one request holds nearly every image's
# (a JPEG with a large EXIF block or thumbnail may need more: then the object is read as a file)
HEADER_BYTES = 64 << 10


def _image_size(path) -> tuple[int, int] | None:
    """An image's (width, height) from its header; a path, or an object URI (its first
    ``HEADER_BYTES`` in one request on S3; a header longer than that read through
    ``storage.open_random``)."""
    from PIL import Image

    from curate import storage

    try:
        if storage.is_uri(path):
            head = storage.read_head(path, HEADER_BYTES)
            try:
                with Image.open(io.BytesIO(head)) as im:
                    return im.size
            except Exception:
                if len(head) < HEADER_BYTES:
                    return None  # the whole object, and no image header in it
            with storage.open_random(path) as f, Image.open(f) as im:
                return im.size
        with Image.open(path) as im:
            return im.size
    except Exception:  # any PIL or storage failure means: not a readable image header
        return None


def list_images(folder: Path, exclude: list[str] = ()) -> list[Path]:
    """Image files under ``folder`` in sorted order, hidden names and ``exclude`` folders
    left out. Links are listed too (a broken one becomes an ``unreadable_image`` reject)."""
    skip = {Path(x).resolve() for x in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", ".")) and (here / d).resolve() not in skip]
        found += [here / f for f in filenames
                  if not f.startswith(("_", ".")) and Path(f).suffix.lower() in IMAGE_EXTS]
    return sorted(found)


class _LocalFolder:
    """A folder on this machine's disk: images named by path, urls their ``file://`` URIs."""

    def __init__(self, root: str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputFileError(root, "image folder does not exist")

    def file(self, rel: str) -> Path:
        return self.root / rel

    def is_file(self, p: Path) -> bool:
        return p.is_file()

    def images(self, exclude: list[str]) -> list[Path]:
        return list_images(self.root, exclude)

    def sizes(self, paths: list[Path]) -> dict:
        return {p: _image_size(p) for p in paths}

    @staticmethod
    def caption_files(images: list[Path]) -> list[tuple]:
        """Per image, its sidecar caption: (name, its bytes, an OSError, or None when there is none)."""
        def read(image: Path) -> tuple:
            txt = image.with_suffix(".txt")
            if not txt.exists() and not txt.is_symlink():
                return txt, None
            try:
                return txt, txt.read_bytes()
            except OSError as e:
                return txt, e

        return [read(p) for p in images]

    @staticmethod
    def url(p: Path) -> str:
        return p.resolve().as_uri()


class _StoreFolder:
    """A folder on a store read in place: one listing, then each image's header (and sidecar)
    by its own requests, ``STORE_CHUNK`` images a time, 16 requests at once. Images are named by
    their URIs (the url too: the key as written, never percent-encoded) and sorted as a local
    folder's paths are (by path components), so a sidecar folder's rows number alike."""

    def __init__(self, root: str):
        from curate import storage

        self.root = storage.resolve(root).uri.rstrip("/")
        self.files = set(storage.list_files(self.root, recursive=True))
        if not self.files:
            raise InputFileError(root, "image folder does not exist (no objects under it)")

    def file(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def is_file(self, uri: str) -> bool:
        return uri in self.files

    def images(self, exclude: list[str]) -> list[str]:
        return self.pick_images(self.root, self.files, exclude)

    @staticmethod
    def pick_images(root: str, files, exclude: list[str]) -> list[str]:
        """The image objects of a listing, in the order a local folder's paths sort."""
        skip = [x.rstrip("/") + "/" for x in exclude]
        found = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_EXTS
                 and not any(f.startswith(x) for x in skip)]  # hidden names: left out by the listing
        return sorted(found, key=lambda f: f[len(root) + 1:].split("/"))

    def sizes(self, uris: list[str]) -> dict:
        from curate import storage

        return dict(zip(uris, storage.map_objects(_image_size, uris)))

    def caption_files(self, images: list[str]) -> list[tuple]:
        from curate import storage

        def read(image: str) -> tuple:
            txt = image[:len(image) - len(PurePosixPath(image).suffix)] + ".txt"
            if txt not in self.files:
                return txt, None
            try:
                return txt, storage.read_object(txt)  # one request on S3, as the image headers
            except (OSError, storage.StorageError) as e:
                return txt, e

        return storage.map_objects(read, images)

    @staticmethod
    def url(uri: str) -> str:
        return uri


def _folder(root: str):
    from curate import storage

    return _StoreFolder(root) if storage.is_uri(root) else _LocalFolder(root)


CAPTIONS_FILES = ("captions.csv", "captions.tsv", "captions.jsonl")
# a captions file's bytes a row, to cut its rows into tasks without reading it: short captions
# (Flickr8k's rows take 60-80 bytes), so the estimate errs towards more (possibly empty) tasks
CAPTION_ROW_BYTES = 40


def _captions_file(root, options: ReaderOptions) -> str | None:
    """The captions file: ``--captions``, else one of ``CAPTIONS_FILES`` in the folder, else None
    (sidecars)."""
    if options.captions is not None:
        return options.captions
    return next((str(root.file(n)) for n in CAPTIONS_FILES if root.is_file(root.file(n))), None)


def plan_slices(folder: str, options: ReaderOptions, per_task: int,
                listing: list[tuple[str, int, int]] | None = None) -> list[tuple[int, int | None]]:
    """An image folder cut into tasks of about ``per_task`` rows: ``(first, end)`` row ranges,
    the last open-ended (``end`` None), so rows the plan did not see (a folder that grew, an
    estimate that fell short) are read too. Sidecar rows are images in sorted order, counted
    from the listing (a store's: ``listing``, the scan's); a captions file's rows are estimated
    from its size (``CAPTION_ROW_BYTES``): nothing is read. A task reads only its rows' images,
    each task listing the folder (a sidecar folder) or parsing the captions file itself."""
    from curate import storage
    from curate.storage.objects import file_info

    if listing is None and storage.is_uri(folder):
        listing = storage.list_objects(folder)
    if listing is not None:
        base = folder.rstrip("/")
        sizes = {f: size for f, size, _ in listing}
        captions = options.captions or next((f"{base}/{n}" for n in CAPTIONS_FILES if f"{base}/{n}" in sizes), None)
    else:
        sizes, captions = {}, _captions_file(_LocalFolder(folder), options)
    if captions is not None:
        size = sizes.get(captions)
        if size is None:
            size = file_info(storage.resolve(captions)).size if storage.is_uri(captions) else os.stat(captions).st_size
        rows = -(-size // CAPTION_ROW_BYTES)
    elif listing is not None:
        rows = len(_StoreFolder.pick_images(base, sizes, options.exclude))
    else:
        rows = len(list_images(Path(folder), options.exclude))
    firsts = list(range(0, max(rows, 1), per_task))
    return [(first, nxt) for first, nxt in zip(firsts, firsts[1:])] + [(firsts[-1], None)]


def read_imagefolder(folder: str, options: ReaderOptions, rows: tuple[int, int | None] | None = None
                     ) -> Iterator[pa.RecordBatch]:
    """Raw batches of an image folder, or of its rows ``rows = (first, end)`` (``end`` None: to
    the last), numbered as in the whole folder."""
    root = _folder(folder)
    first, end = rows or (0, None)
    captions = _captions_file(root, options)
    if captions is None:
        yield from _read_sidecars(root, options, first, end)
        return
    yield from _read_captions_file(root, captions, options, first, end)


def images_without_rows(folder: str, options: ReaderOptions) -> tuple[str | None, list]:
    """(its captions file, the folder's images that no row of it names), in sorted order: files
    ingest finds and does not read, counted as such (``readers.UNCAPTIONED``). A sidecar folder
    has none: each image is a row (one without a caption a ``missing_text`` reject). Planning
    holds the folder's listing and the set of image names its captions file gives."""
    from curate.readers import read_file_raw

    root = _folder(folder)
    captions = _captions_file(root, options)
    if captions is None:
        return None, []
    named = set()
    for raw in read_file_raw(captions, _captions_options(captions, options)):
        for name in raw.column("url").to_pylist():
            rel = Path(name.strip()) if name and name.strip() else None
            if rel is not None and not (rel.is_absolute() or ".." in rel.parts):  # as the reader finds it
                named.update((root.file(rel.as_posix()), root.file(f"{IMAGES_SUBFOLDER}/{rel.as_posix()}")))
    return captions, [p for p in root.images(options.exclude) if p not in named]


IMAGES_SUBFOLDER = "images"  # Flickr8k/30k's layout (captions.csv beside images/), as `curate eval -r` reads it


def _named_image(root, rel: str, where: dict):
    """The image a captions row names: ``rel`` in the folder, or, when it is not there, in the
    folder's ``images/`` subfolder (the file the row means in the Flickr8k layout)."""
    p = where.get(rel)
    if p is None:
        p = root.file(rel)
        if not root.is_file(p):
            alt = root.file(f"{IMAGES_SUBFOLDER}/{rel}")
            p = alt if root.is_file(alt) else p
        where[rel] = p
    return p


def _captions_options(captions: str, options: ReaderOptions) -> ReaderOptions:
    """How a captions file is read: its image column as the url, the caption as the text."""
    cm = options.columns
    return ReaderOptions(columns=ColumnMap(url=cm.image or _detect_image_col(captions), text=cm.text),
                         header=options.header, batch_size=options.batch_size)


def _rows_in(raws: Iterator[pa.RecordBatch], first: int, end: int | None) -> Iterator[pa.RecordBatch]:
    """The raw batches' rows with ``first <= source_row < end``; stops reading past ``end``
    (rows come in order)."""
    import pyarrow.compute as pc

    for raw in raws:
        rows = raw.column("source_row")
        if end is not None and raw.num_rows and rows[0].as_py() >= end:
            return
        if first or end is not None:
            keep = pc.greater_equal(rows, first)
            if end is not None:
                keep = pc.and_(keep, pc.less(rows, end))
            raw = raw.filter(keep)
        if raw.num_rows:
            yield raw


def _read_captions_file(root, captions: str, options: ReaderOptions, first: int = 0,
                        end: int | None = None) -> Iterator[pa.RecordBatch]:
    from curate.readers import read_file_raw  # the captions file is itself a delimited/jsonl file

    sub = _captions_options(captions, options)
    sizes: dict = {}  # image -> (w, h), None (unreadable) or "missing"
    where: dict[str, object] = {}  # a name -> the image it means (beside the captions file, or in images/)
    out = RawBuilder(options.batch_size)
    for raw in _rows_in(read_file_raw(captions, sub), first, end):
        d = raw.to_pydict()
        images = [None] * raw.num_rows  # each row's image, once its name passes the checks
        for i in range(raw.num_rows):
            name = d["url"][i]
            if d["reason"][i] is None and name and name.strip():
                rel = Path(name.strip())
                if not (rel.is_absolute() or ".." in rel.parts):
                    images[i] = _named_image(root, rel.as_posix(), where)
        todo = list(dict.fromkeys(p for p in images if p is not None and p not in sizes))
        present = [p for p in todo if root.is_file(p)]
        sizes.update({p: "missing" for p in todo})
        sizes.update(root.sizes(present))
        for i in range(raw.num_rows):
            row, name, p = d["source_row"][i], d["url"][i], images[i]
            if d["reason"][i] is not None:  # the captions file's own reject: its row, named by that file
                out.reject(row, d["reason"][i], f"{_name(captions)}: {d['detail'][i]}", d["raw"][i])
                continue
            if not name or not name.strip():
                out.reject(row, "missing_image", "no image file named", None)
                continue
            if p is None:
                out.reject(row, "unsafe_member_path", f"image path {name!r} leaves the image folder", name)
                continue
            size = sizes[p]
            if size == "missing":
                out.reject(row, "missing_image", f"image {str(p)!r} does not exist", name)
                continue
            if size is None:
                out.reject(row, "unreadable_image", f"image {str(p)!r} is not a readable image", name)
                continue
            out.add(row, url=root.url(p), text=d["text"][i], width=size[0], height=size[1], extra=d["extra"][i])
            if out.full():
                yield from iter_flush(out)
    yield from iter_flush(out)


def _first_line(path: str) -> str:
    """The first line of a text file or object, read as text (universal newlines)."""
    from curate import storage

    with storage.open_binary(path) if storage.is_uri(path) else open(path, "rb") as f:
        return io.TextIOWrapper(f, encoding="utf-8", errors="replace").readline()


def _detect_image_col(captions: str) -> str:
    from curate.readers import detect_format

    fmt = detect_format(captions)
    first = _first_line(captions)
    if fmt in ("csv", "tsv"):
        names = [n.strip().strip('"') for n in first.rstrip("\r\n").split("," if fmt == "csv" else "\t")]
    else:
        import json

        try:
            names = list(json.loads(first))
        except (ValueError, TypeError):
            names = []
    for c in IMAGE_CANDIDATES:
        if c in names:
            return c
    raise InputFileError(captions, f"no image column found (tried {IMAGE_CANDIDATES}); map one with --image-col")


def _read_sidecars(root, options: ReaderOptions, lo: int = 0, hi: int | None = None) -> Iterator[pa.RecordBatch]:
    """source_row = index of the image in sorted order (of images ``lo`` to ``hi``); an image
    without a .txt is a reject."""
    out = RawBuilder(options.batch_size)
    images = root.images(options.exclude)
    end = len(images) if hi is None else min(hi, len(images))
    for first in range(lo, end, STORE_CHUNK):
        chunk = images[first:min(first + STORE_CHUNK, end)]
        texts = root.caption_files(chunk)
        sizes = root.sizes([p for p, (_, data) in zip(chunk, texts) if isinstance(data, bytes)])
        for i, p, (txt, data) in zip(range(first, first + len(chunk)), chunk, texts):
            if data is None:
                out.reject(i, "missing_text", f"no caption file {_name(txt)} beside {_name(p)}", str(p))
                continue
            if isinstance(data, Exception):
                why = getattr(data, "strerror", None) or data
                out.reject(i, "missing_text", f"cannot read the caption file {txt} ({why})", str(p))
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                out.reject(i, "text_not_utf8", f"{txt} is not valid UTF-8", data[:2000])
                continue
            size = sizes[p]
            if size is None:
                out.reject(i, "unreadable_image", f"{p} is not a readable image", str(p))
                continue
            out.add(i, url=root.url(p), text=text, width=size[0], height=size[1], extra=None)
            if out.full():
                yield from iter_flush(out)
    yield from iter_flush(out)


def _name(p) -> str:
    return str(p).rsplit("/", 1)[-1]
