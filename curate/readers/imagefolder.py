"""Image folders with captions: a folder of images plus a captions file (CSV/TSV/JSONL with
an image-file column and a caption column, e.g. Flickr8k's ``image,caption``), or a
sidecar ``name.txt`` beside each image. url = the image's ``file://`` URI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import IMAGE_EXTS, ColumnMap, RawBuilder, ReaderOptions, iter_flush

IMAGE_CANDIDATES = ("image", "file_name", "filename", "file", "image_path", "path", "img")


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # any PIL failure means: not a readable image header
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


def read_imagefolder(folder: str, options: ReaderOptions) -> Iterator[pa.RecordBatch]:
    root = Path(folder)
    if not root.is_dir():
        raise InputFileError(folder, "image folder does not exist")
    captions = options.captions
    if captions is None:
        for name in ("captions.csv", "captions.tsv", "captions.jsonl"):
            if (root / name).exists():
                captions = str(root / name)
                break
    if captions is None:
        yield from _read_sidecars(root, options)
        return
    yield from _read_captions_file(root, captions, options)


def _read_captions_file(root: Path, captions: str, options: ReaderOptions) -> Iterator[pa.RecordBatch]:
    from curate.readers import read_file_raw  # the captions file is itself a delimited/jsonl file

    cm = options.columns
    image_col = cm.image
    sub = ReaderOptions(columns=ColumnMap(url=image_col or _detect_image_col(captions), text=cm.text),
                        header=options.header, batch_size=options.batch_size)
    sizes: dict[str, tuple[int, int] | None] = {}
    out = RawBuilder(options.batch_size)
    for raw in read_file_raw(captions, sub):
        d = raw.to_pydict()
        for i in range(raw.num_rows):
            row = d["source_row"][i]
            if d["reason"][i] is not None:
                out.reject(row, d["reason"][i], d["detail"][i], d["raw"][i])
                continue
            name = d["url"][i]
            if not name or not name.strip():
                out.reject(row, "missing_image", "no image file named", None)
                continue
            rel = Path(name.strip())
            if rel.is_absolute() or ".." in rel.parts:
                out.reject(row, "unsafe_member_path", f"image path {name!r} leaves the image folder", name)
                continue
            p = root / rel
            key = str(p)
            if key not in sizes:
                sizes[key] = _image_size(p) if p.is_file() else None
                if not p.is_file():
                    sizes[key] = ("missing",)  # type: ignore[assignment]
            size = sizes[key]
            if size == ("missing",):
                out.reject(row, "missing_image", f"image {str(p)!r} does not exist", name)
                continue
            if size is None:
                out.reject(row, "unreadable_image", f"image {str(p)!r} is not a readable image", name)
                continue
            out.add(row, url=p.resolve().as_uri(), text=d["text"][i], width=size[0], height=size[1],
                    extra=d["extra"][i])
            if out.full():
                yield from iter_flush(out)
    yield from iter_flush(out)


def _detect_image_col(captions: str) -> str:
    from curate.readers import detect_format

    fmt = detect_format(captions)
    if fmt in ("csv", "tsv"):
        with open(captions, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        names = [n.strip().strip('"') for n in first.rstrip("\r\n").split("," if fmt == "csv" else "\t")]
    else:
        import json

        with open(captions, encoding="utf-8", errors="replace") as f:
            try:
                names = list(json.loads(f.readline()))
            except (ValueError, TypeError):
                names = []
    for c in IMAGE_CANDIDATES:
        if c in names:
            return c
    raise InputFileError(captions, f"no image column found (tried {IMAGE_CANDIDATES}); map one with --image-col")


def _read_sidecars(root: Path, options: ReaderOptions) -> Iterator[pa.RecordBatch]:
    """source_row = index of the image in sorted order; an image without a .txt is a reject."""
    out = RawBuilder(options.batch_size)
    for i, p in enumerate(list_images(root, options.exclude)):
        txt = p.with_suffix(".txt")
        if not txt.exists() and not txt.is_symlink():
            out.reject(i, "missing_text", f"no caption file {txt.name} beside {p.name}", str(p))
            continue
        try:
            data = txt.read_bytes()
        except OSError as e:
            out.reject(i, "missing_text", f"cannot read the caption file {txt} ({e.strerror or e})", str(p))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            out.reject(i, "text_not_utf8", f"{txt} is not valid UTF-8", data[:2000])
            continue
        size = _image_size(p)
        if size is None:
            out.reject(i, "unreadable_image", f"{p} is not a readable image", str(p))
            continue
        out.add(i, url=p.resolve().as_uri(), text=text, width=size[0], height=size[1],
                extra=None)
        if out.full():
            yield from iter_flush(out)
    yield from iter_flush(out)

