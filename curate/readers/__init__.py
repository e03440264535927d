"""Input readers: every supported pool format becomes raw Arrow batches (see ``base``).

Formats: parquet (incl. DataComp metadata and img2dataset's per-shard Parquet), csv, tsv,
jsonl, coco (COCO captions JSON), webdataset (tars), imagefolder (images + captions file),
img2dataset (an img2dataset output folder: its per-shard Parquet files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import RAW_SCHEMA, ColumnMap, ReaderOptions

FORMATS = ("parquet", "datacomp", "csv", "tsv", "jsonl", "coco", "webdataset", "img2dataset", "imagefolder")
_EXT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
        ".ndjson": "jsonl", ".tar": "webdataset", ".json": "coco"}


def detect_format(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        names = [x.name for x in p.iterdir()]
        if any(n.endswith(".tar") for n in names) and any(n.endswith(".parquet") for n in names):
            return "img2dataset"
        if any(n.endswith(".tar") for n in names):
            return "webdataset"
        if any(n.endswith(".parquet") for n in names):
            return "parquet"
        return "imagefolder"
    fmt = _EXT.get(p.suffix.lower())
    if fmt is None:
        raise InputFileError(path, f"cannot tell the format from the extension {p.suffix!r}; pass --format ({', '.join(FORMATS)})")
    return fmt


def expand_inputs(paths: list[str], fmt: str | None) -> list[tuple[str, str]]:
    """(file, format) pairs: folders of parquet/tar files expand to their files, sorted."""
    out: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputFileError(raw, "no such file or folder")
        f = fmt or detect_format(raw)
        if p.is_dir() and f in ("parquet", "datacomp", "img2dataset"):
            files = sorted(x for x in p.rglob("*.parquet") if not x.name.startswith(("_", ".")))
            out += [(str(x.resolve()), "parquet") for x in files]
        elif p.is_dir() and f == "webdataset":
            out += [(str(x.resolve()), "webdataset") for x in sorted(p.rglob("*.tar"))]
        elif p.is_dir() and f in ("jsonl", "csv", "tsv"):
            ext = {"jsonl": "*.jsonl", "csv": "*.csv", "tsv": "*.tsv"}[f]
            out += [(str(x.resolve()), f) for x in sorted(p.rglob(ext))]
        else:
            out.append((str(p.resolve()), "parquet" if f == "datacomp" else f))
    return out


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

        return read_imagefolder(path, options)
    raise InputFileError(path, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = ["RAW_SCHEMA", "ColumnMap", "ReaderOptions", "FORMATS", "detect_format", "expand_inputs", "read_file_raw"]
