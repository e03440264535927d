"""Real photos (../shared/data/flickr8k, skipped when absent): resized and re-encoded copies
are found; 1,000 distinct photos are not merged with each other."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from PIL import Image

from curate.perceptual.hashes import hash_images
from curate.perceptual.job import DEFAULT_RADIUS, REASON, run_perceptual_dedup


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(shared_data):
    files = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))
    if len(files) < 1000:
        pytest.skip(f"need 1,000 flickr8k photos, found {len(files)}")
    return files[:1000]


def test_copies_of_real_photos_found_distinct_photos_not_merged(photos, tmp_dataset, capsys):
    images = {f"{i:032x}": p.read_bytes() for i, p in enumerate(photos)}
    source = {u: u for u in images}
    for i, p in enumerate(photos[:100]):  # a tenth of the photos gets a web copy
        im = Image.open(p).convert("RGB")
        w, h = im.size
        u = f"c{i:031x}"
        images[u] = (_jpeg(im.resize((w // 2, h // 2), Image.BICUBIC), 85) if i % 2 else _jpeg(im, 40))
        source[u] = f"{i:032x}"
    uids = sorted(images)
    table, fails, stats = hash_images(uids, uids, images, "flickr8k")
    assert stats["hashed"] == len(images) and fails.num_rows == 0
    tmp_dataset.write_table("phashes", table, schema="phashes")
    r = run_perceptual_dedup(tmp_dataset, DEFAULT_RADIUS)
    dec = r["decisions"].to_pylist()
    removed = [d for d in dec if d["reason"] == REASON]
    false_pos = [d for d in removed if source[d["uid"]] != source[d["detail"]]]
    found = {d["uid"] for d in removed if d["uid"].startswith("c")} | {d["detail"] for d in removed if d["detail"].startswith("c")}
    with capsys.disabled():
        print(f"\nflickr8k, radius {DEFAULT_RADIUS}: {len(found)} of 100 copies grouped with their photo, "
              f"{len(false_pos)} distinct photos merged (of 1,000)")
    assert len(found) == 100 and not false_pos
    assert r["counts"]["reasons"] == {"kept": 1000, REASON: 100}
    assert r["counts"]["groups_with_duplicates"] == 100
