from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curate.errors import DatasetError
from curate.reshard import read_meta, reshard, shard_urls
from curate.subset import write_subset

STRANGER = "f" * 32  # a uid the downloads table has never seen


def _samples(folder):
    urls, _ = shard_urls(folder)
    out = []
    for url in urls:
        for s in wds.WebDataset(url, shardshuffle=False):
            out.append((url.rsplit("/", 1)[1], s["__key__"], s["txt"].decode(), json.loads(s["json"]), s["jpg"]))
    return out


def _subset(ds, uids):
    # uid 5 three times (upsampled), uid 3 failed to download, one unknown uid
    rows = uids[:20] + [uids[5], uids[5], STRANGER]
    write_subset(ds, "pick", rows)
    return rows


def test_reshard_repeats_keys_counts_and_reasons(download_dataset):
    ds, uids = download_dataset
    rows = _subset(ds, uids)
    meta = reshard(ds, "pick", shard_size=7)
    out = ds.root / "webdataset" / "pick"
    c = meta["counts"]
    assert c["subset_rows"] == len(rows) == 23
    assert c["distinct_uids"] == 21
    assert c["not_written"] == {"download_failed": 1, "not_in_downloads": 1}
    assert c["written"] == 21 == c["subset_rows"] - 2
    assert meta["output_shard_count"] == 3 and meta["output_shard_format"] == "{:08d}.tar"

    got = _samples(out)
    assert len(got) == 21
    keys = Counter(k for _, k, *_ in got)
    assert {f"{uids[5]}-0", f"{uids[5]}-1", f"{uids[5]}-2"} <= set(keys)
    assert all(v == 1 for v in keys.values())
    by_uid = Counter(j["uid"] for *_, j, _ in got)
    assert by_uid[uids[5]] == 3 and uids[3] not in by_uid
    for shard, key, txt, j, jpg in got:
        assert key.rsplit("-", 1)[0] == j["uid"]
        i = uids.index(j["uid"])
        assert txt == f"caption {i}" and j["caption"] == txt  # member contents travel with their uid
        assert jpg[:2] == b"\xff\xd8"
    sizes = json.loads((out / "sizes.json").read_text())
    assert list(sizes.values()) == [7, 7, 7]
    assert json.loads((out / "00000002_stats.json").read_text())["successes"] == 7
    missing = pq.read_table(out / "_missing.parquet").to_pylist()
    assert sorted((m["uid"], m["reason"], m["copies"]) for m in missing) == sorted(
        [(uids[3], "download_failed", 1), (STRANGER, "not_in_downloads", 1)])
    assert (ds.root / "_runs" / "reshard-pick.json").exists()
    assert read_meta(out)["plan_hash"] == meta["plan_hash"]


def test_reshard_is_deterministic_and_shuffle_is_seeded(download_dataset, tmp_path):
    ds, uids = download_dataset
    _subset(ds, uids)
    reshard(ds, "pick", tmp_path / "a", shard_size=10)
    reshard(ds, "pick", tmp_path / "b", shard_size=10)
    for name in ("00000000.tar", "00000001.tar", "00000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    reshard(ds, "pick", tmp_path / "s1", shard_size=10, shuffle=True, seed=1)
    reshard(ds, "pick", tmp_path / "s1b", shard_size=10, shuffle=True, seed=1)
    reshard(ds, "pick", tmp_path / "s2", shard_size=10, shuffle=True, seed=2)
    plain = [k for _, k, *_ in _samples(tmp_path / "a")]
    s1 = [k for _, k, *_ in _samples(tmp_path / "s1")]
    assert s1 == [k for _, k, *_ in _samples(tmp_path / "s1b")]
    assert sorted(s1) == sorted(plain) and s1 != plain
    assert [k for _, k, *_ in _samples(tmp_path / "s2")] != s1


def test_reshard_resumes_and_refuses_foreign_output(download_dataset, tmp_path):
    ds, uids = download_dataset
    _subset(ds, uids)
    out = tmp_path / "w"
    first = reshard(ds, "pick", out, shard_size=7)
    before = (out / "00000000.tar").read_bytes()
    # interrupted run: shard 1 and meta.json never finished
    (out / "00000001_stats.json").unlink()
    (out / "00000001.tar").unlink()
    (out / "meta.json").unlink()
    again = reshard(ds, "pick", out, shard_size=7)
    assert again["counts"]["resumed_shards"] == 2
    assert again["counts"]["written"] == first["counts"]["written"]
    assert (out / "00000000.tar").read_bytes() == before
    assert reshard(ds, "pick", out, shard_size=7)["plan_hash"] == first["plan_hash"]
    with pytest.raises(DatasetError, match="--overwrite"):
        reshard(ds, "pick", out, shard_size=5)
    meta = reshard(ds, "pick", out, shard_size=5, overwrite=True)
    assert meta["output_shard_count"] == 5 and not (out / "00000005.tar").exists()


def test_corrupt_source_shard_is_reported_not_fatal(download_dataset, tmp_path):
    ds, uids = download_dataset
    _subset(ds, uids)
    (ds.root / "images" / "00001.tar").write_bytes(b"this is not a tar file" * 10)
    meta = reshard(ds, "pick", tmp_path / "w", shard_size=100)
    nw = meta["counts"]["not_written"]
    # shard 1 held uids 10..19 (10 rows, uid 5 is in shard 0)
    assert nw["source_shard_unreadable"] == 10
    assert meta["counts"]["written"] + sum(nw.values()) == 23
    assert meta["errors"] and "images/00001.tar" in meta["errors"][0]


def test_subset_file_and_missing_downloads_table(download_dataset, tmp_path):
    ds, uids = download_dataset
    d = write_subset(ds, "pick", uids[:4])
    meta = reshard(ds, subset_file=d / "uids.npy", output=tmp_path / "w")
    assert meta["counts"]["written"] == 3
    from curate.tables import Dataset

    with pytest.raises(DatasetError, match="downloads"):
        reshard(Dataset(tmp_path / "empty"), subset_file=d / "uids.npy", output=tmp_path / "x")


def test_spark_engine_writes_the_same_bytes(download_dataset, tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    ds, uids = download_dataset
    _subset(ds, uids)
    reshard(ds, "pick", tmp_path / "local", shard_size=8)
    reshard(ds, "pick", tmp_path / "spark", shard_size=8, executor=SparkExecutor(spark))
    for i in range(3):
        name = f"{i:08d}.tar"
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "spark" / name).read_bytes()


def test_cli_reshard_local_engine(download_dataset, tmp_path, capsys):
    from curate.cli import main

    ds, uids = download_dataset
    _subset(ds, uids)
    with pytest.raises(SystemExit) as e:
        main(["reshard", str(ds.root), "--subset", "pick", "--output", str(tmp_path / "w"),
              "--shard-size", "5", "--engine", "local"])
    assert e.value.code == 0
    assert "21 of 23 subset rows written to 5 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["reshard", str(ds.root), "--subset", "nope", "--engine", "local"])
    assert e.value.code == 2
    assert "subset not found" in capsys.readouterr().err


def test_sample_ids_copied_from_the_subsets_own_records(download_dataset, tmp_path, monkeypatch):
    """A subset's ``sample_ids.npy`` is its ``uids.npy`` copied whole (no uid parsed on the
    driver): the same bytes the conversion of ``uids.parquet`` writes. When the subset's files
    disagree (a manifest count, a header, an end record), the conversion runs instead."""
    import numpy as np

    from curate.reshard import finish

    ds, uids = download_dataset
    _subset(ds, uids)
    sub = ds.root / "subsets" / "pick"
    converted = tmp_path / "converted.npy"
    finish._write_sample_ids(sub / "uids.parquet", tmp_path, converted)
    conversions = []
    real = finish._write_sample_ids
    monkeypatch.setattr(finish, "_write_sample_ids", lambda *a: (conversions.append(a), real(*a)))
    reshard(ds, "pick", tmp_path / "a", shard_size=10)
    assert conversions == []
    assert (tmp_path / "a" / "sample_ids.npy").read_bytes() == converted.read_bytes() == (sub / "uids.npy").read_bytes()

    good = (sub / "uids.npy").read_bytes()
    rec = np.load(sub / "uids.npy")
    wrong_end = rec.copy()
    wrong_end[-1] = (0, 0)
    manifest = json.loads((sub / "_manifest.json").read_text())
    for case in ("manifest", "header", "end"):
        (sub / "uids.npy").write_bytes(good)
        (sub / "_manifest.json").write_text(json.dumps(manifest))
        if case == "manifest":
            (sub / "_manifest.json").write_text(json.dumps({**manifest, "count": manifest["count"] + 1}))
        elif case == "header":
            np.save(sub / "uids.npy", rec[:-1])
        else:
            np.save(sub / "uids.npy", wrong_end)
        reshard(ds, "pick", tmp_path / case, shard_size=10)
        assert len(conversions) == 1, case
        conversions.clear()
        assert (tmp_path / case / "sample_ids.npy").read_bytes() == converted.read_bytes(), case
