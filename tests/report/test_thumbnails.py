"""The report's thumbnails: one task per tar shard (``shard_thumbnails``), on any engine, reading
a local shard by its headers and stopping once its wanted images are found."""

from __future__ import annotations

import shutil
import tarfile

import pytest

from toypool import make_downloaded_pool

from curate.report.images import shard_thumbnails, thumbnail, thumbnails


def _wanted(ds, n):
    d = ds.read("downloads").to_pydict()
    return [(u, k) for u, s, k in zip(d["uid"], d["status"], d["key"]) if s == "success"][:n]


def test_thumbnails_on_spark_equal_in_process(tmp_path, spark):
    """Shards named relative to the dataset (as download writes them) reach Spark's tasks; the
    pictures equal the in-process ones and each is the thumbnail of its own member."""
    from curate.engine import LocalExecutor
    from curate.engine.spark import SparkExecutor

    ds = make_downloaded_pool(tmp_path / "ds")
    uids = [u for u, _ in _wanted(ds, 12)]
    local = thumbnails(ds, uids, executor=LocalExecutor())
    assert set(local) == set(uids)
    assert thumbnails(ds, uids, executor=SparkExecutor(spark)) == local
    with tarfile.open(ds.root / "images" / "00000.tar") as tf:
        u, k = _wanted(ds, 1)[0]
        assert local[u] == thumbnail(tf.extractfile(f"{k}.jpg").read())[0]


def test_more_shown_samples_than_keep_values_takes_are_joined(tmp_path, monkeypatch):
    """Past ``MAX_KEEP_VALUES`` shown uids the downloads rows are found by a join instead of a
    filter carrying the keys: the same pictures."""
    from curate.engine.frame import LocalFrame
    from curate.report import frames

    ds = make_downloaded_pool(tmp_path / "ds")
    uids = [u for u, _ in _wanted(ds, 12)]
    filtered = thumbnails(ds, uids)
    monkeypatch.setattr(frames, "MAX_KEEP_VALUES", 5)
    monkeypatch.setattr(LocalFrame, "keep_values", lambda *a: pytest.fail("keys carried past the bound"))
    assert thumbnails(ds, uids) == filtered and len(filtered) == 12


def test_a_shard_is_read_until_its_images_are_found(tmp_path, monkeypatch):
    """The read stops at the last wanted member (the headers after it are never read): a shard
    cut short after it still gives every picture, and a shard cut before one gives the ones
    before the cut (no error)."""
    ds = make_downloaded_pool(tmp_path / "ds")
    tar = ds.root / "images" / "00000.tar"
    wanted = _wanted(ds, 3)
    task = {"path": str(tar), "keys": {k: u for u, k in wanted}, "size": 112}
    headers = []  # the offset of each header read
    real_next = tarfile.TarFile.next
    monkeypatch.setattr(tarfile.TarFile, "next", lambda self: headers.append(self.offset) or real_next(self))
    whole = shard_thumbnails(task)["thumbs"]
    monkeypatch.setattr(tarfile.TarFile, "next", real_next)
    assert set(whole) == {u for u, _ in wanted}
    with tarfile.open(tar) as tf:
        members = tf.getmembers()
        images = {f"{k}.jpg" for _, k in wanted}
        last = max((m for m in members if m.name in images), key=lambda m: m.offset)
        end = last.offset_data + last.size
    assert max(headers) == last.offset < members[-1].offset  # no header after the last wanted image read
    cut = tmp_path / "cut.tar"
    shutil.copy(tar, cut)
    with open(cut, "r+b") as f:  # everything after the last wanted image replaced by garbage
        f.seek(-(-end // 512) * 512)
        f.write(b"\x01" * 4096)
        f.truncate()
    assert shard_thumbnails({**task, "path": str(cut)})["thumbs"] == whole
    first = min((m for m in members if m.name in images), key=lambda m: m.offset)
    with open(cut, "r+b") as f:  # now cut inside the header of the wanted image after the first
        f.truncate(min(m.offset for m in members if m.name in images and m is not first) + 100)
    uid = {f"{k}.jpg": u for u, k in wanted}[first.name]
    assert shard_thumbnails({**task, "path": str(cut)})["thumbs"] == {uid: whole[uid]}
    assert shard_thumbnails({**task, "path": str(tmp_path / "gone.tar")})["thumbs"] == {}


def test_a_huge_photo_is_thumbnailed_small_or_left_without_a_picture_never_a_crash(recwarn):
    """A 108 MP JPEG (which a download with a raised --max-image-area accepts) is decoded at a
    reduced scale, with no Pillow warning; one over twice Pillow's limit has no picture (it
    raised DecompressionBombError through the whole report)."""
    import io

    from PIL import Image

    from curate.report.images import thumbnail

    def jpeg(w, h):
        buf = io.BytesIO()
        Image.new("L", (w, h), 128).save(buf, "JPEG")
        return buf.getvalue()

    uri, size = thumbnail(jpeg(12000, 9000))
    assert size == (12000, 9000) and uri.startswith("data:image/jpeg;base64,")
    assert thumbnail(jpeg(14000, 13000)) is None
    assert not [w for w in recwarn if "DecompressionBomb" in str(w.category)]
