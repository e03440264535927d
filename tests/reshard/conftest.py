"""Download shards in img2dataset's layout (key.jpg/.txt/.json) plus a downloads table."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
from PIL import Image

from curate.tables import load_schema
from curate.uid import derive_uid


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + i % 5, 8), ((i * 37) % 256, (i * 91) % 256, 128)).save(buf, format="JPEG")
    return buf.getvalue()


def build_download_shards(dataset, n: int = 25, per_shard: int = 10, failed: tuple[int, ...] = ()):
    """n samples; indices in ``failed`` get a failed downloads row and no tar member."""
    import webdataset as wds

    (dataset.root / "images").mkdir(parents=True, exist_ok=True)
    rows, uids = [], []
    for s in range(-(-n // per_shard)):
        rel = f"images/{s:05d}.tar"
        with wds.TarWriter(str(dataset.root / rel), encoder=False) as w:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                uid = derive_uid(f"http://127.0.0.1/{i}.jpg", f"caption {i}")
                uids.append(uid)
                key = f"{s:05d}{i % per_shard:04d}"
                if i in failed:
                    rows.append(dict(uid=uid, status="failed", error_class="http_404", error_message="404",
                                     shard=None, key=None, attempts=1))
                    continue
                w.write({"__key__": key, "jpg": _jpeg(i), "txt": f"caption {i}".encode(),
                         "json": json.dumps({"key": key, "caption": f"caption {i}", "status": "success"}).encode()})
                rows.append(dict(uid=uid, status="success", error_class=None, error_message=None,
                                 shard=rel, key=key, attempts=1))
    schema = load_schema("downloads").arrow()
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    dataset.write_table("downloads", table, schema="downloads")
    return uids


@pytest.fixture
def download_dataset(tmp_dataset):
    uids = build_download_shards(tmp_dataset, n=25, per_shard=10, failed=(3,))
    return tmp_dataset, uids
