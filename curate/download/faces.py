"""DataComp's face boxes, carried from the pool into the download shards.

DataComp's metadata gives every sample ``face_bboxes``: a list of ``[x1, y1, x2, y2]`` boxes
(floats, relative to the image size). DataComp's resharder blurs those faces
(``--apply-blur``) reading them from a Parquet per shard, found through a
``--blur-metadata-map`` JSON. So the download passes the pool's boxes to img2dataset as an
extra column: they land in each shard's ``images/NNNNNNNN.parquet`` (and the member
``.json``), and ``images/_blur_metadata_map.json`` maps every shard to its Parquet.

The boxes are read from wherever ``samples`` holds them: a ``face_bboxes`` column (list or
JSON text) or the ``face_bboxes`` key of the ``extra`` JSON (how ingest keeps DataComp's
other columns).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.errors import DatasetError
from curate.tables import Dataset, atomic_write_bytes

FACE_BBOXES = "face_bboxes"
FACE_BBOXES_TYPE = pa.list_(pa.list_(pa.float64()))  # DataComp's metadata type
BLUR_MAP = "_blur_metadata_map.json"


def face_source(dataset: Dataset) -> tuple[pa.Field, str, str] | None:
    """(the samples column holding the boxes, SQL expression giving them as JSON or a list, row
    prefilter), or None when samples carry no face boxes."""
    shards = dataset.shards("samples")
    if not shards:
        return None
    schema = storage.parquet_file(shards[0]).schema_arrow
    if FACE_BBOXES in schema.names:
        field = schema.field(FACE_BBOXES)
        t = field.type
        expr = f"{FACE_BBOXES}::JSON" if pa.types.is_string(t) or pa.types.is_large_string(t) else FACE_BBOXES
        return field, expr, f"{FACE_BBOXES} IS NOT NULL"
    if "extra" in schema.names:
        return schema.field("extra"), f"json_extract(extra, '$.{FACE_BBOXES}')", f"extra LIKE '%\"{FACE_BBOXES}\"%'"
    return None


TODO = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string())])
WITH_BOXES = (TODO.append(pa.field(FACE_BBOXES, FACE_BBOXES_TYPE)).append(pa.field("has_raw", pa.bool_()))
              .append(pa.field("position", pa.int64())))


def with_face_bboxes(batch: pa.RecordBatch, expr: str, where: str, samples_dir: str) -> pa.Table:
    """One batch of (uid, url, text, <box column>, position) as (uid, url, text, face_bboxes,
    has_raw, position), same row order. A value that is not a list of 4-number boxes is an error naming the uid."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("todo", pa.Table.from_batches([batch]).append_column(
            "_order", pa.array(np.arange(batch.num_rows, dtype=np.int64))))
        out = con.sql(f"""
            WITH f AS (SELECT *, CASE WHEN {where} THEN {expr} END AS raw FROM todo)
            SELECT uid, url, text, TRY_CAST(raw AS DOUBLE[][]) AS {FACE_BBOXES},
                   raw IS NOT NULL AND json_type(raw::JSON) <> 'NULL' AS has_raw, position
            FROM f ORDER BY _order
        """).to_arrow_table()
    except duckdb.Error as e:
        raise DatasetError(f"{samples_dir}: cannot read face_bboxes ({e})") from e
    finally:
        con.close()
    has_raw = pc.fill_null(out.column("has_raw"), False).combine_chunks()
    boxes = out.column(FACE_BBOXES).combine_chunks().cast(FACE_BBOXES_TYPE)
    unparsed = pc.and_(has_raw, pc.is_null(boxes))
    inner = boxes.flatten()  # one list per box
    bad_box = ~pc.fill_null(pc.equal(pc.list_value_length(inner), 4), False).to_numpy(zero_copy_only=False)
    coords = inner.flatten()
    if len(coords):  # a null or NaN coordinate (NaN is null in samples.extra) makes the box unusable
        bad_coord = ~pc.fill_null(pc.is_finite(coords), False).to_numpy(zero_copy_only=False)
        np.logical_or.at(bad_box, pc.list_parent_indices(inner).to_numpy(), bad_coord)
    bad_row = None
    if pc.any(unparsed).as_py():
        bad_row = pc.index(unparsed, True).as_py()
    elif bad_box.any():
        bad_row = pc.list_parent_indices(boxes)[int(np.argmax(bad_box))].as_py()
    if bad_row is not None:
        uid = out.column("uid")[bad_row].as_py()
        raise DatasetError(f"{samples_dir}: uid {uid}: face_bboxes is not a list of "
                           f"[x1, y1, x2, y2] boxes (DataComp's format)")
    return pa.Table.from_arrays([out.column("uid"), out.column("url"), out.column("text"), boxes, has_raw,
                                 out.column("position")], schema=WITH_BOXES)


def write_blur_metadata_map(dataset: Dataset) -> int:
    """Write ``images/_blur_metadata_map.json`` (DataComp resharder's ``--blur-metadata-map``:
    ``{name: {"parquet": path, "shards": [tar path]}}``, absolute paths) for the complete
    shards whose Parquet has face boxes; returns how many. No such shard: no map."""
    from curate.download.job import IMAGES, complete_shards, shard_digits, shard_name

    d = dataset.path(IMAGES)  # absolute: the dataset's root is resolved
    path = storage.join(d, BLUR_MAP)
    digits = shard_digits(dataset)
    entries = {}
    for i in complete_shards(dataset):
        name = shard_name(i, digits)
        parquet, tar = storage.join(d, f"{name}.parquet"), storage.join(d, f"{name}.tar")
        if FACE_BBOXES in storage.parquet_file(parquet).schema_arrow.names and storage.exists(tar):
            entries[name] = {"parquet": str(parquet), "shards": [str(tar)]}
    if not entries:
        storage.delete(storage.resolve(path))
        return 0
    atomic_write_bytes(path, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())
    return len(entries)
