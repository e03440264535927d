"""A small downloaded pool: samples, downloads with img2dataset-style tar shards, embeddings.

A plain module (not conftest) so tests/recipe can build the same pool."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from curate.tables import Dataset
from curate.uid import derive_uid

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def _jpeg(colour, shape, size=64) -> bytes:
    im = Image.new("RGB", (size, size), (235, 235, 235))
    d = ImageDraw.Draw(im)
    box = (10, 10, size - 10, size - 10)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=colour)
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def make_downloaded_pool(root, n: int = 60, dim: int = 8) -> Dataset:
    rng = np.random.default_rng(1)
    ds = Dataset(root)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        colour, shape = names[i % 3], ("circle", "square")[i % 2]
        text = f"a {colour} {shape}" if i % 7 else "buy cheap watches now"
        url = f"http://127.0.0.1:1/{i}.jpg"
        rows.append((derive_uid(url, text), url, text, colour, shape))
    samples = pa.table({
        "uid": [r[0] for r in rows], "url": [r[1] for r in rows], "text": [r[2] for r in rows],
        "source_file": ["pool.parquet"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "extra": pa.nulls(n, pa.string()),
    })
    ds.write_table("samples", samples, schema="samples")
    (ds.root / "images").mkdir(parents=True)
    status, shard, key = [], [], []
    with tarfile.open(ds.root / "images" / "00000.tar", "w") as tf:
        for i, (uid, url, text, colour, shape) in enumerate(rows):
            if i % 10 == 9:
                status.append("failed"), shard.append(None), key.append(None)
                continue
            k = f"{i:09d}"
            for name, data in ((f"{k}.jpg", _jpeg(COLOURS[colour], shape)), (f"{k}.txt", text.encode()),
                               (f"{k}.json", json.dumps({"uid": uid}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            status.append("success"), shard.append("images/00000.tar"), key.append(k)
    ok = [s == "success" for s in status]
    downloads = pa.table({
        "uid": samples["uid"], "status": status,
        "error_class": [None if o else "http_404" for o in ok], "error_message": [None if o else "404" for o in ok],
        "sha256": pa.nulls(n, pa.string()), "width": pa.array([64 if o else None for o in ok], pa.int32()),
        "height": pa.array([64 if o else None for o in ok], pa.int32()),
        "original_width": pa.array([64 if o else None for o in ok], pa.int32()),
        "original_height": pa.array([64 if o else None for o in ok], pa.int32()),
        "shard": pa.array(shard, pa.string()), "key": pa.array(key, pa.string()), "attempts": pa.array([1] * n, pa.int32()),
    })
    ds.write_table("downloads", downloads, schema="downloads")
    ok_uids = [r[0] for r, o in zip(rows, ok) if o]
    m = len(ok_uids)
    x = rng.normal(size=(m, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(m, dim)).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    ds.write_table("embeddings/toy", pa.table({
        "uid": ok_uids,
        "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float16).ravel()), dim),
        "text_embedding": pa.FixedSizeListArray.from_arrays(pa.array(y.astype(np.float16).ravel()), dim),
        "clip_score": pa.array((x * y).sum(1), pa.float32()),
    }), schema="embeddings")
    return ds


def run_two_stage_recipe(tmp_path, ds):
    from curate.recipe import load_recipe, run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: rep\ndataset: {ds.root}\nembedding_model: toy\noutput: curated\nstages:\n"
        "  - kind: sql\n    name: no-spam\n    query: SELECT uid FROM samples WHERE text NOT LIKE 'buy%'\n    reason: spam\n"
        "  - kind: sql\n    name: clip\n    query: SELECT uid, clip_score AS value FROM embeddings WHERE clip_score > -0.3\n"
        "    reason: low_clip_score\n")
    return run_recipe(load_recipe(recipe), engine="local", quiet=True)
