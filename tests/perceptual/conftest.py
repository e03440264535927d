"""A downloaded dataset of real images (made by the real download job from file:// URLs):
distinct photo-like textures, and resized, re-encoded and slightly cropped copies of some."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset
from curate.uid import derive_uid

N_DISTINCT = 16
COPIED = (0, 1, 2, 3)  # bases that get copies


def texture(seed: int, size: int = 160) -> Image.Image:
    """A photo-like image: smooth noise at several scales, in colour (each seed its own picture)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size, 3), np.float32)
    for cells, amp in ((3, 90.0), (6, 50.0), (12, 25.0), (40, 10.0)):
        small = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        layer = np.stack([np.asarray(Image.fromarray(small[..., c]).resize((size, size), Image.BICUBIC))
                          for c in range(3)], axis=-1)
        out += amp * layer
    return Image.fromarray(np.clip(out + 128, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def copies(img: Image.Image) -> dict[str, bytes]:
    """The kinds of copy a web pool is full of."""
    w, h = img.size
    c = max(1, w // 40)
    return {"resized": jpeg(img.resize((w * 3 // 4, h * 3 // 4), Image.BICUBIC)),
            "reencoded": jpeg(img, quality=45),
            "cropped": jpeg(img.crop((c, c, w - c, h - c)).resize((w, h), Image.BICUBIC))}


def write_images(folder: Path) -> list[tuple[Path, str]]:
    """(file, what) for every image: base-<i>.jpg and copy-<i>-<kind>.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(N_DISTINCT):
        img = texture(1000 + i)
        p = folder / f"base-{i:02d}.jpg"
        p.write_bytes(jpeg(img))
        out.append((p, f"base-{i}"))
        if i in COPIED:
            for kind, data in copies(img).items():
                q = folder / f"copy-{i:02d}-{kind}.jpg"
                q.write_bytes(data)
                out.append((q, f"base-{i}"))
    return out


def make_samples(files: list[Path], captions: list[str]):
    import pyarrow as pa

    urls = [p.resolve().as_uri() for p in files]
    n = len(urls)
    return pa.table({
        "uid": [derive_uid(u, t) for u, t in zip(urls, captions)], "url": urls, "text": captions,
        "source_file": ["/test/pool.parquet"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array([None] * n, pa.int32()), "original_height": pa.array([None] * n, pa.int32()),
        "extra": pa.array([None] * n, pa.string())})


@pytest.fixture(scope="session")
def copies_template(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The dataset (3 image shards) and uid -> the base picture it shows."""
    base = tmp_path_factory.mktemp("perceptual")
    files = write_images(base / "www")
    paths = [p for p, _ in files]
    captions = [f"picture {p.stem}" for p in paths]
    root = base / "template"
    ds = Dataset(root)
    samples = make_samples(paths, captions)
    ds.write_table("samples", samples, schema="samples")
    stats = run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=10, thread_count=4,
                                                              policy=FetchPolicy(allow_file_urls=True)))
    assert stats["success"] == len(paths), stats
    truth = dict(zip(samples.column("uid").to_pylist(), [w for _, w in files]))
    return root, truth


@pytest.fixture
def copies_ds(copies_template, tmp_path) -> tuple[Dataset, dict[str, str]]:
    root, truth = copies_template
    dst = tmp_path / "ds"
    shutil.copytree(root, dst)
    return Dataset(dst), truth


def corrupt_member(ds: Dataset, uid: str, data: bytes | None) -> None:
    """Rewrite the image shard holding ``uid`` with that image's bytes replaced (``None``:
    the member removed), as a damaged disk or a partial copy would leave it."""
    d = ds.read("downloads", columns=["uid", "shard", "key"]).to_pylist()
    row = next(r for r in d if r["uid"] == uid)
    path = ds.root / row["shard"]
    members = []
    with tarfile.open(path) as tf:
        for m in tf:
            members.append((m, tf.extractfile(m).read() if m.isfile() else None))
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tf:
        for m, body in members:
            if m.name.rpartition(".")[0] == row["key"] and m.name.endswith(".jpg"):
                if data is None:
                    continue
                body = data
                m.size = len(data)
            tf.addfile(m, io.BytesIO(body) if body is not None else None)
    tmp.replace(path)
