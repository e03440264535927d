"""Thumbnails of downloaded samples, read straight from the img2dataset tar shards."""

from __future__ import annotations

import base64
import contextlib
import io
import tarfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.tables import Dataset

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail(data: bytes, size: int = 112) -> tuple[str, tuple[int, int]] | None:
    """JPEG data URI of a thumbnail (longest side ``size``) and the original (w, h); None if
    undecodable, or over twice Pillow's pixel limit (a download may accept it, its
    ``--max-image-area`` raising the limit there; the page shows no picture for it). A JPEG is
    decoded at a reduced scale (``draft``): a 108 MP photo costs the thumbnail's memory, not 800 MB."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # a large photo of the pool is not a library warning for the user
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                im.draft("RGB", (size, size))
                im = im.convert("RGB")
                im.thumbnail((size, size))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return data_uri(buf.getvalue(), "image/jpeg"), (w, h)


def thumbnails(dataset: Dataset, uids: list[str], size: int = 112, executor=None) -> dict[str, str]:
    """uid -> thumbnail data URI for the uids that have a downloaded image. The downloads rows of
    those uids are found by ``executor``'s workers (default in-process), and each tar shard
    holding some is read by a task of its own (``shard_thumbnails``), so no machine reads more
    than its shards and a cluster reads them side by side."""
    if not uids or not dataset.has_table("downloads"):
        return {}
    from curate.engine import LocalExecutor
    from curate.report.frames import rows_for_keys, table_frame

    ex = executor or LocalExecutor()
    t = rows_for_keys(table_frame(ex, dataset, "downloads", ["uid", "status", "shard", "key"]), "uid",
                      pa.array(sorted(set(uids)), pa.string())).collect_small(2 * len(uids))
    t = t.filter(pc.fill_null(pc.equal(t.column("status"), "success"), False))
    by_shard: dict[str, dict[str, str]] = defaultdict(dict)
    for uid, shard, key in zip(t.column("uid").to_pylist(), t.column("shard").to_pylist(), t.column("key").to_pylist()):
        if shard and key:
            by_shard[shard][key] = uid
    def where(shard: str) -> str:
        return shard if storage.is_uri(shard) or Path(shard).is_absolute() else storage.join(dataset.root, shard)

    tasks = [{"path": str(where(shard)), "keys": keys, "size": size} for shard, keys in sorted(by_shard.items())]
    out: dict[str, str] = {}
    for r in ex.map_tasks(tasks, shard_thumbnails, "thumbnails"):
        out.update(r["thumbs"])
    return out


def shard_thumbnails(task: dict) -> dict:
    """The thumbnails of one tar shard's wanted members (``task["keys"]``: key -> uid). A local
    shard is read by its headers only (tarfile skips each member's data by seeking); a shard on
    a store is streamed (a seek there is a request of its own). Either way the read stops once
    every wanted image is found. A missing or damaged shard leaves its samples without a
    picture, not the report."""
    keys, size, path = task["keys"], task["size"], task["path"]
    thumbs: dict[str, str] = {}
    left = set(keys)
    try:
        with contextlib.ExitStack() as stack:
            if storage.is_uri(path):
                stream = stack.enter_context(storage.open_input_stream(path))
                tf = stack.enter_context(tarfile.open(fileobj=stream, mode="r|*"))
            else:
                tf = stack.enter_context(tarfile.open(path, mode="r:*"))
            for m in tf:
                stem, dot, ext = m.name.rpartition(".")
                if not dot or f".{ext.lower()}" not in IMAGE_EXTS or stem not in left:
                    continue
                left.discard(stem)
                f = tf.extractfile(m)
                th = thumbnail(f.read(), size) if f else None
                if th:
                    thumbs[keys[stem]] = th[0]
                if not left:
                    break
    except (tarfile.TarError, OSError):  # missing (FileNotFoundError) or damaged; a store that cannot be reached raises
        pass  # what was read before the damage is kept
    return {"thumbs": thumbs}
