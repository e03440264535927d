"""The embed job over real downloaded shards: equality with open_clip, scores, failures, resume, Spark."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from curate.embed.job import EmbedOptions, run_embed
from curate.engine import LocalExecutor
from curate.models import load_model, save_checkpoint
from curate.tables import load_schema

TINY = "curate-tiny__random-seed0"


def _opts(**kw):
    return EmbedOptions(**{"model": "curate-tiny", "batch_size": 4, "threads": 2, **kw})


def _vectors(col) -> np.ndarray:
    return np.stack([np.asarray(v, np.float32) for v in col.to_pylist()])


def _direct(bundle, ds, uids):
    """open_clip called directly on the stored JPEG bytes and the samples' captions."""
    downloads = {r["uid"]: r for r in ds.read("downloads").to_pylist()}
    texts = dict(zip(*[ds.read("samples").column(c).to_pylist() for c in ("uid", "text")]))
    pixels = []
    for u in uids:
        r = downloads[u]
        with tarfile.open(ds.root / r["shard"]) as tf:
            data = tf.extractfile(f"{r['key']}.jpg").read()
        pixels.append(bundle.preprocess(Image.open(io.BytesIO(data)).convert("RGB")))
    with torch.no_grad():
        img = torch.nn.functional.normalize(bundle.model.encode_image(torch.stack(pixels)), dim=-1)
        txt = torch.nn.functional.normalize(bundle.model.encode_text(bundle.tokenizer([texts[u] for u in uids])), dim=-1)
    return img.numpy(), txt.numpy()


def test_embeddings_equal_direct_open_clip_within_float16(downloaded):
    stats = run_embed(downloaded, LocalExecutor(), _opts())
    assert stats["model_id"] == TINY
    assert (stats["embedded"], stats["failed"], stats["unaccounted"]) == (18, 0, 0)
    t = downloaded.read(f"embeddings/{TINY}", schema="embeddings")
    load_schema("embeddings").validate(t)
    assert t.schema.field("image_embedding").type.list_size == 64
    uids = t.column("uid").to_pylist()
    assert len(set(uids)) == 18
    img, txt = _vectors(t.column("image_embedding")), _vectors(t.column("text_embedding"))
    d_img, d_txt = _direct(load_model("curate-tiny", seed=0), downloaded, uids)
    np.testing.assert_allclose(img, d_img, atol=2e-3)
    np.testing.assert_allclose(txt, d_txt, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=2e-3)
    score = t.column("clip_score").to_numpy()
    np.testing.assert_allclose(score, np.sum(d_img * d_txt, axis=1), atol=1e-5)  # cosine, in float32
    np.testing.assert_allclose(score, np.sum(img * txt, axis=1), atol=2e-3)
    assert (downloaded.root / "_runs" / f"embed-{TINY}.json").exists()
    # the vector columns are PLAIN (a dictionary of float16 values costs ~4x the decode:
    # docs/scale-history.md), the uid column keeps the dataset's dictionary encoding
    import pyarrow.parquet as pq

    for p in downloaded.shards(f"embeddings/{TINY}"):
        rg = pq.ParquetFile(p).metadata.row_group(0)
        enc = {rg.column(i).path_in_schema.split(".")[0]: rg.column(i).encodings for i in range(rg.num_columns)}
        assert "RLE_DICTIONARY" not in enc["image_embedding"] + enc["text_embedding"], enc
        assert "RLE_DICTIONARY" in enc["uid"], enc


def test_local_checkpoint_gives_its_own_table(downloaded, tmp_path):
    src = load_model("curate-tiny", seed=5)
    ckpt = save_checkpoint(src.model, tmp_path / "epoch_1.pt", epoch=1)
    stats = run_embed(downloaded, LocalExecutor(), _opts(pretrained=str(ckpt)))
    assert stats["model_id"].startswith("curate-tiny__epoch_1-") and stats["embedded"] == 18
    t = downloaded.read(f"embeddings/{stats['model_id']}")
    d_img, _ = _direct(load_model("curate-tiny", pretrained=str(ckpt)), downloaded, t.column("uid").to_pylist())
    np.testing.assert_allclose(_vectors(t.column("image_embedding")), d_img, atol=2e-3)


def _rewrite_tar(path, change):
    """Rewrite an image shard, letting ``change(name, data)`` return new bytes or None to drop."""
    members = []
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            members.append((m, tf.extractfile(m).read()))
    with tarfile.open(path, "w") as tf:
        for m, data in members:
            new = change(m.name, data)
            if new is None:
                continue
            m.size = len(new)
            tf.addfile(m, io.BytesIO(new))


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_bad_images_get_failure_rows_and_nothing_disappears(downloaded, decode):
    d = downloaded.read("downloads").to_pylist()
    in_shard1 = sorted((r for r in d if r["shard"] == "images/00000001.tar"), key=lambda r: r["key"])
    truncated, garbage, missing = in_shard1[0], in_shard1[1], in_shard1[2]

    def change(name, data):
        if name == f"{truncated['key']}.jpg":
            return data[: len(data) // 3]
        if name == f"{garbage['key']}.jpg":
            return b"\x00not a jpeg" * 50
        if name == f"{missing['key']}.jpg":
            return None
        return data

    _rewrite_tar(downloaded.root / "images" / "00000001.tar", change)
    stats = run_embed(downloaded, LocalExecutor(), _opts(decode=decode))
    assert (stats["embedded"], stats["failed"], stats["unaccounted"]) == (15, 3, 0)
    f = downloaded.read(f"embed_failures/{TINY}", schema="embed_failures")
    reasons = {r["uid"]: r for r in f.to_pylist()}
    assert reasons[truncated["uid"]]["error_class"] == "truncated"
    assert reasons[garbage["uid"]]["error_class"] == "decode_error"
    assert reasons[missing["uid"]]["error_class"] == "missing_member"
    assert all(r["shard"] == "images/00000001.tar" and r["error_message"] for r in reasons.values())
    emb_uids = set(downloaded.read(f"embeddings/{TINY}").column("uid").to_pylist())
    assert emb_uids.isdisjoint(reasons) and len(emb_uids | set(reasons)) == 18


def test_resume_skips_finished_shards_and_redoes_a_killed_one(downloaded):
    first = run_embed(downloaded, LocalExecutor(), _opts(limit_shards=1))
    assert first["shards"] == 1 and first["embedded"] == 6
    emb_dir = downloaded.table_dir(f"embeddings/{TINY}")
    part0 = emb_dir / "part-00000.parquet"
    before = part0.read_bytes()
    mtime = part0.stat().st_mtime_ns
    # a task killed mid-write leaves a hidden temp file and its failures part, but no embeddings part
    (emb_dir / ".part-00001.parquet.dead.tmp").write_bytes(b"partial")
    fail_dir = downloaded.table_dir(f"embed_failures/{TINY}")
    (fail_dir / "part-00001.parquet").write_bytes((fail_dir / "part-00000.parquet").read_bytes())
    assert downloaded.count(f"embeddings/{TINY}") == 6  # the partial file is invisible

    second = run_embed(downloaded, LocalExecutor(), _opts())
    assert second["shards"] == 3 and second["shards_skipped"] == 1
    assert part0.stat().st_mtime_ns == mtime and part0.read_bytes() == before
    assert second["embedded"] == 18 and second["failed"] == 0 and second["unaccounted"] == 0
    assert not (emb_dir / ".part-00001.parquet.dead.tmp").exists()  # the killed write's temp file is gone
    third = run_embed(downloaded, LocalExecutor(), _opts())
    assert third["shards_skipped"] == 3
    # --limit-shards after the whole run: the counts are the limited shards' (no false warning)
    limited = run_embed(downloaded, LocalExecutor(), _opts(limit_shards=1))
    assert (limited["embedded"], limited["downloads_success"], limited["unaccounted"]) == (6, 6, 0)


@pytest.mark.slow
def test_spark_tasks_write_the_same_bytes_as_the_local_loop(downloaded, spark, tmp_path):
    import shutil

    from curate.engine.spark import SparkExecutor

    other = tmp_path / "other"
    shutil.copytree(downloaded.root, other)
    from curate.tables import Dataset

    local = run_embed(downloaded, LocalExecutor(), _opts())
    on_spark = run_embed(Dataset(other), SparkExecutor(spark), _opts())
    assert local["embedded"] == on_spark["embedded"] == 18
    for i in range(3):
        a = downloaded.shard_path(f"embeddings/{TINY}", i).read_bytes()
        b = Dataset(other).shard_path(f"embeddings/{TINY}", i).read_bytes()
        assert a == b


def test_missing_downloads_is_a_clear_error(tmp_dataset, capsys):
    from curate.errors import DatasetError

    tmp_dataset.root.mkdir(parents=True)
    with pytest.raises(DatasetError, match="no downloaded image shards"):
        run_embed(tmp_dataset, LocalExecutor(), _opts())
    # the dataset's state is said before the model is looked at (a model error first told a
    # user with no images yet to fix the model)
    from curate.cli import main

    with pytest.raises(SystemExit) as e:
        main(["embed", str(tmp_dataset.root), "--model", "no-such-model"])
    assert e.value.code == 2 and "no downloaded image shards" in capsys.readouterr().err


def test_uint8_transfer_path_gives_the_same_shard(downloaded):
    from curate.embed.job import embed_shard, read_tar_images, shard_samples

    rows = shard_samples(downloaded.root, 0)
    keys = rows.column("key").to_pylist()
    images = read_tar_images(downloaded.root / "images" / "00000000.tar", set(keys))
    bundle = load_model("curate-tiny", seed=0)
    args = (bundle, rows.column("uid").to_pylist(), keys, rows.column("caption").to_pylist(), images, "images/00000000.tar", 4, 2)
    plain, _, _ = embed_shard(*args, uint8_transfer=False)
    fast, _, stats = embed_shard(*args, uint8_transfer=True)
    assert stats["embedded"] == 6
    np.testing.assert_allclose(_vectors(fast.column("image_embedding")), _vectors(plain.column("image_embedding")), atol=1e-3)
    assert fast.column("uid").to_pylist() == plain.column("uid").to_pylist()


def test_tensor_decode_path_matches_the_pil_path(downloaded):
    """torchvision batch decode + resize on the model's device (nvJPEG on CUDA; libjpeg-turbo here)."""
    from curate.embed.core import TensorJpegPipeline
    from curate.embed.job import embed_shard, read_tar_images, shard_samples

    bundle = load_model("curate-tiny", seed=0)
    assert TensorJpegPipeline(bundle).usable
    rows = shard_samples(downloaded.root, 2)
    keys = rows.column("key").to_pylist()
    images = read_tar_images(downloaded.root / "images" / "00000002.tar", set(keys))
    args = (bundle, rows.column("uid").to_pylist(), keys, rows.column("caption").to_pylist(), images, "images/00000002.tar", 4, 2)
    pil, _, _ = embed_shard(*args)
    tensor, _, stats = embed_shard(*args, decode="tensor")
    assert stats["decode"] == "tensor" and stats["embedded"] == 6
    a, b = _vectors(tensor.column("image_embedding")), _vectors(pil.column("image_embedding"))
    assert np.min(np.sum(a * b, axis=1)) > 0.99  # same pictures, resampling rounding apart
    assert tensor.column("text_embedding").equals(pil.column("text_embedding"))


def test_a_dataset_with_five_digit_image_shards_embeds(tmp_path, shared_data):
    """Datasets downloaded before shard names followed DataComp (00000.tar) still embed."""
    from curate.download import DownloadOptions, FetchPolicy, run_download
    from curate.tables import Dataset

    from tests.shared_sets import photo_samples as make_samples

    photos = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:5]
    ds = Dataset(tmp_path / "old")
    ds.write_table("samples", make_samples(photos, [f"photo {i}" for i in range(5)]), schema="samples")
    run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=3, thread_count=2, shard_digits=5,
                                                      policy=FetchPolicy(allow_file_urls=True)))
    assert sorted(p.name for p in (ds.root / "images").glob("*.tar")) == ["00000.tar", "00001.tar"]
    stats = run_embed(ds, LocalExecutor(), _opts())
    assert (stats["embedded"], stats["failed"], stats["unaccounted"]) == (5, 0, 0)
    assert sorted(ds.read(f"embeddings/{TINY}")["uid"].to_pylist()) == sorted(ds.read("samples")["uid"].to_pylist())


def test_a_bad_model_on_a_downloaded_dataset_fails_before_any_engine(downloaded):
    """check_embed (which the command runs before it opens an executor) refuses an unknown
    architecture and a tag that is no pretrained tag, on a dataset that has images."""
    from curate.embed.job import check_embed
    from curate.models import ModelError

    with pytest.raises(ModelError, match="no-such-arch"):
        check_embed(downloaded, _opts(model="no-such-arch"))
    with pytest.raises(ModelError, match="no_such_tag"):
        check_embed(downloaded, _opts(pretrained="no_such_tag"))
