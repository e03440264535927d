"""Download shards as DataComp's own tools expect them: 8-digit names its resharder finds,
and the pool's face boxes in each shard's Parquet with a --blur-metadata-map for --apply-blur."""

from __future__ import annotations

import json
import re
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curate.download import DownloadOptions, FetchPolicy, complete_shards, run_download
from curate.engine import LocalExecutor
from curate.errors import CurateError, DatasetError
from curate.tables import Dataset

from .conftest import samples_table


def _opts(**kw) -> DownloadOptions:
    base = dict(samples_per_shard=4, thread_count=4, timeout=2.0,
                policy=FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=1.5))
    base.update(kw)
    return DownloadOptions(**base)


def _datacomp_listing(input_dir, shard_format="{:08d}.tar", stats_format="{:08d}_stats.json", num_shards=None):
    """Input shards as DataComp's resharder finds them with its defaults: probe
    ``shard_format.format(i)`` at doubling i, bisect to the last one that exists (unless
    --num-shards is given), then read each shard's size from ``successes`` in its stats file."""
    exists = lambda i: (input_dir / shard_format.format(i)).exists()  # noqa: E731
    if num_shards is None:
        n = 1
        while exists(n - 1):
            n *= 2
        if n == 1:
            return {}
        lo, hi = n // 2, n  # shard lo-1 exists, shard hi-1 does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if exists(mid - 1) else (lo, mid)
        num_shards = lo
    sizes = {}
    for i in range(num_shards):
        stats, tar = input_dir / stats_format.format(i), input_dir / shard_format.format(i)
        if stats.exists() and tar.exists():
            sizes[tar.name] = int(json.loads(stats.read_text())["successes"])
    return sizes


def _tar_uids(path):
    with tarfile.open(path) as tf:
        return {json.loads(tf.extractfile(m).read())["uid"] for m in tf if m.name.endswith(".json")}


def test_shards_have_datacomps_names_and_its_resharder_listing_finds_them_all(tmp_path, image_server, photos):
    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"photo {i}") for i, p in enumerate(photos[:10])] + [(f"{b}/missing", "gone")]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")
    stats = run_download(ds, LocalExecutor(), _opts())
    assert stats["new_shards"] == ["00000000", "00000001", "00000002"]
    assert stats["datacomp_resharder_args"] == []  # its defaults fit

    images = ds.root / "images"
    on_disk = sorted(p.name for p in images.glob("*.tar"))
    assert on_disk == ["00000000.tar", "00000001.tar", "00000002.tar"]
    found = _datacomp_listing(images)
    assert sorted(found) == on_disk
    downloads = ds.read("downloads")
    assert sum(found.values()) == stats["success"] == 10
    for name in on_disk:  # DataComp keys samples by the uid in each member's .json
        in_table = downloads.filter(pc.equal(downloads["shard"], f"images/{name}"))["uid"].to_pylist()
        assert _tar_uids(images / name) == set(in_table) and found[name] == len(in_table)
    keys = [k for k in downloads["key"].to_pylist() if k]
    assert all(re.fullmatch(r"0000000[0-2]\d{1}", k) for k in keys)  # img2dataset's key: shard digits + index


def test_a_dataset_with_five_digit_shards_keeps_them(tmp_path, image_server, photos):
    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:4])] + [(f"{b}/flaky/{photos[4].name}", "flaky")]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")
    run_download(ds, LocalExecutor(), _opts(shard_digits=5))
    assert sorted(p.name for p in (ds.root / "images").glob("*.tar")) == ["00000.tar", "00001.tar"]
    # a later run with default options (8 digits for new datasets) continues the dataset's width
    retry = run_download(ds, LocalExecutor(), _opts(), retry_failed=True)
    assert retry["new_shards"] == ["00002"] and retry["success"] == 5
    assert retry["datacomp_resharder_args"] == ["--shard-format", "{:05d}.tar", "--shard-stats-format", "{:05d}_stats.json"]
    assert sorted(set(ds.read("downloads")["shard"].to_pylist())) == ["images/00000.tar", "images/00002.tar"]
    assert sorted(p.name for p in (ds.root / "images").glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    assert complete_shards(ds) == [0, 1, 2]
    assert sorted(_datacomp_listing(ds.root / "images", "{:05d}.tar", "{:05d}_stats.json")) == [
        "00000.tar", "00001.tar", "00002.tar"]  # DataComp's resharder with --shard-format {:05d}.tar ...
    with pytest.raises(CurateError, match="holds 5-digit shards; --shard-digits 8"):
        run_download(ds, LocalExecutor(), _opts(shard_digits=8), retry_failed=True)


def test_a_gap_left_by_a_killed_run_needs_num_shards_which_the_download_reports(tmp_path, image_server, photos):
    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:12])]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")
    run_download(ds, LocalExecutor(), _opts(samples_per_shard=3))
    (ds.root / "images" / "00000001_stats.json").unlink()  # killed while shard 1 was being written
    stats = run_download(ds, LocalExecutor(), _opts(samples_per_shard=3))
    images = ds.root / "images"
    assert sorted(p.name for p in images.glob("*.tar")) == ["00000000.tar", "00000002.tar", "00000003.tar", "00000004.tar"]
    assert stats["datacomp_resharder_args"] == ["--num-shards", "5"]
    assert sum(_datacomp_listing(images).values()) < 12  # its shard-count search stops at the gap
    found = _datacomp_listing(images, num_shards=5)
    assert sorted(found) == ["00000000.tar", "00000002.tar", "00000003.tar", "00000004.tar"]
    assert sum(found.values()) == 12


# ------------------------------------------------------------------ face boxes
def _datacomp_boxes(blur_map_path, input_dir, tar_name, uid):
    """Face boxes of ``uid`` the way DataComp's resharder finds them for --apply-blur: the map
    gives the shard's Parquet (only for shards whose folder is --input-dir), whose (uid,
    face_bboxes) rows sorted by uid are searched with the uid's u8,u8 record."""
    entries = json.loads(blur_map_path.read_text())
    by_shard = {}
    for e in entries.values():
        for s in e["shards"]:
            from pathlib import Path

            if Path(s).parent == input_dir:
                by_shard[Path(s).name] = e["parquet"]
    t = pq.read_table(by_shard[tar_name], columns=["uid", "face_bboxes"]).sort_by("uid")
    keys = np.array([divmod(int(u, 16), 2**64) for u in t["uid"].to_pylist()], dtype=[("f0", "<u8"), ("f1", "<u8")])
    want = np.array([divmod(int(uid, 16), 2**64)], dtype=keys.dtype)[0]
    i = int(np.searchsorted(keys, want))
    assert keys[i] == want
    return t["face_bboxes"][i].as_py()


def _pool_with_boxes(server, photos):
    b = server.base
    rows = [(f"{b}/img/{p.name}", f"face photo {i}") for i, p in enumerate(photos[:6])] + [(f"{b}/missing", "gone")]
    boxes = [[[0.1, 0.2, 0.5, 0.6]], [], [[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 1.0, 1.0]], None,
             [[0.3, 0.3, 0.7, 0.9]], [[0.2, 0.1, 0.4, 0.3]], [[0.1, 0.1, 0.2, 0.2]]]
    return rows, boxes


def _check_boxes_in_shards(ds, samples, boxes):
    want = dict(zip(samples["uid"].to_pylist(), boxes))
    images = (ds.root / "images").resolve()
    blur_map = images / "_blur_metadata_map.json"
    assert blur_map.exists()
    seen = 0
    for i in complete_shards(ds):
        name = f"{i:08d}"
        t = pq.read_table(images / f"{name}.parquet")
        assert t.schema.field("face_bboxes").type == pa.list_(pa.list_(pa.float64()))
        for uid, fb in zip(t["uid"].to_pylist(), t["face_bboxes"].to_pylist()):
            assert fb == want[uid], uid  # failures keep their row (and boxes) too
            seen += 1
        with tarfile.open(images / f"{name}.tar") as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    uid = json.loads(tf.extractfile(m).read())["uid"]
                    assert _datacomp_boxes(blur_map, images, f"{name}.tar", uid) == want[uid]
    assert seen == len(want)


def test_face_bboxes_from_samples_extra_reach_the_shard_parquet_and_datacomps_blur_lookup(tmp_path, image_server, photos):
    rows, boxes = _pool_with_boxes(image_server, photos)
    samples = samples_table(rows)
    extra = [json.dumps({"face_bboxes": fb, "clip_b32_similarity_score": 0.3}) if fb is not None
             else json.dumps({"clip_b32_similarity_score": 0.3}) for fb in boxes]
    samples = samples.set_column(samples.schema.get_field_index("extra"), "extra", pa.array(extra, pa.string()))
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples, schema="samples")
    stats = run_download(ds, LocalExecutor(), _opts())
    assert stats["success"] == 6
    assert stats["datacomp_resharder_args"] == [
        "--blur-metadata-map", str((ds.root / "images" / "_blur_metadata_map.json").resolve())]
    _check_boxes_in_shards(ds, samples, boxes)

    # DataComp's own blurrer (img2dataset's BoundingBoxBlurrer, what --apply-blur calls) runs on them
    import cv2
    from img2dataset.blurrer import BoundingBoxBlurrer

    d = ds.read("downloads").to_pylist()
    first = next(r for r in d if r["uid"] == samples["uid"][0].as_py())
    with tarfile.open(ds.root / first["shard"]) as tf:
        jpg = tf.extractfile(f"{first['key']}.jpg").read()
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_UNCHANGED)
    blurred = BoundingBoxBlurrer()(img.copy(), boxes[0])
    h, w = img.shape[:2]
    inside = (slice(int(0.25 * h), int(0.55 * h)), slice(int(0.15 * w), int(0.45 * w)))
    assert np.abs(blurred[inside].astype(int) - img[inside].astype(int)).mean() > 1.0


def test_face_bboxes_from_a_samples_column(tmp_path, image_server, photos):
    rows, boxes = _pool_with_boxes(image_server, photos)
    samples = samples_table(rows).append_column(
        "face_bboxes", pa.array(boxes, pa.list_(pa.list_(pa.float32()))))
    ds = Dataset(tmp_path / "ds")
    (ds.root / "samples").mkdir(parents=True)
    pq.write_table(samples, ds.root / "samples" / "part-00000.parquet")
    run_download(ds, LocalExecutor(), _opts())
    # float32 column: the float64 values are the float32 ones, exactly
    as32 = [None if fb is None else [[float(np.float32(x)) for x in box] for box in fb] for fb in boxes]
    _check_boxes_in_shards(ds, samples, as32)


def test_a_pool_without_face_boxes_gets_no_column_and_no_map(tmp_path, image_server, photos):
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table([(f"{image_server.base}/img/{photos[0].name}", "x")]), schema="samples")
    run_download(ds, LocalExecutor(), _opts())
    assert "face_bboxes" not in pq.read_schema(ds.root / "images" / "00000000.parquet").names
    assert not (ds.root / "images" / "_blur_metadata_map.json").exists()


def test_malformed_face_boxes_are_a_one_line_error_naming_the_uid(tmp_path, image_server, photos):
    rows = [(f"{image_server.base}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:2])]
    samples = samples_table(rows)
    extra = [json.dumps({"face_bboxes": [[0.1, 0.2, 0.3, 0.4]]}), json.dumps({"face_bboxes": [[0.1, 0.2, 0.3]]})]
    samples = samples.set_column(samples.schema.get_field_index("extra"), "extra", pa.array(extra, pa.string()))
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples, schema="samples")
    bad = samples["uid"][1].as_py()
    with pytest.raises(DatasetError, match=f"uid {bad}: face_bboxes is not a list of"):
        run_download(ds, LocalExecutor(), _opts())
    for value in ("eyes at the top", [[0.1, None, 0.3, 0.4]], [None], [[0.1, 0.2, 0.3, 0.4], [1, 2]]):
        extra[1] = json.dumps({"face_bboxes": value})  # NaN coordinates reach samples.extra as null
        samples = samples.set_column(samples.schema.get_field_index("extra"), "extra", pa.array(extra, pa.string()))
        ds.write_table("samples", samples, schema="samples")
        with pytest.raises(DatasetError, match=f"uid {bad}: face_bboxes is not a list of"):
            run_download(ds, LocalExecutor(), _opts())
    assert not (ds.root / "images").exists() or not any((ds.root / "images").glob("*.tar"))  # checked first


@pytest.mark.extended
def test_face_boxes_on_spark_match_the_local_loop(tmp_path, image_server, photos, spark):
    from curate.engine.spark import SparkExecutor

    rows, boxes = _pool_with_boxes(image_server, photos)
    samples = samples_table(rows)
    extra = [None if fb is None else json.dumps({"face_bboxes": fb}) for fb in boxes]
    samples = samples.set_column(samples.schema.get_field_index("extra"), "extra", pa.array(extra, pa.string()))
    got = {}
    for name, executor in (("spark", SparkExecutor(spark)), ("local", LocalExecutor())):
        ds = Dataset(tmp_path / name)
        ds.write_table("samples", samples, schema="samples")
        run_download(ds, executor, _opts())
        _check_boxes_in_shards(ds, samples, boxes)
        got[name] = sorted(
            (r["uid"], r["face_bboxes"], r["status"])
            for i in complete_shards(ds)
            for r in pq.read_table(ds.root / "images" / f"{i:08d}.parquet", columns=["uid", "face_bboxes", "status"]).to_pylist())
    assert got["spark"] == got["local"] and len(got["local"]) == len(rows)


@pytest.mark.slow
def test_face_boxes_from_ingested_datacomp_metadata(tmp_path, image_server, photos, spark):
    """The whole path: DataComp metadata Parquet -> curate ingest (face_bboxes kept in
    samples.extra) -> download -> each shard's Parquet and DataComp's blur lookup."""
    from curate.ingest.job import IngestConfig, run_ingest
    from curate.engine.spark import SparkExecutor

    rows, boxes = _pool_with_boxes(image_server, photos)
    uids = [f"{(i + 1) * 0x9E3779B97F4A7C15:032x}"[-32:] for i in range(len(rows))]
    meta = pa.table({
        "uid": uids, "url": [u for u, _ in rows], "text": [t for _, t in rows],
        "original_width": pa.array([500] * len(rows), pa.int64()), "original_height": pa.array([375] * len(rows), pa.int64()),
        "clip_b32_similarity_score": pa.array([0.3] * len(rows), pa.float32()),
        "clip_l14_similarity_score": pa.array([0.25] * len(rows), pa.float32()),
        "face_bboxes": pa.array([fb if fb is not None else [] for fb in boxes], pa.list_(pa.list_(pa.float64()))),
        "sha256": ["0" * 64] * len(rows),
    })
    src = tmp_path / "metadata"
    src.mkdir()
    pq.write_table(meta, src / "0000.parquet")
    ds = Dataset(tmp_path / "ds")
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(src)], output=str(ds.root), format="datacomp"))
    assert sorted(ds.read("samples")["uid"].to_pylist()) == sorted(uids)
    run_download(ds, LocalExecutor(), _opts())
    _check_boxes_in_shards(ds, meta, [fb if fb is not None else [] for fb in boxes])
