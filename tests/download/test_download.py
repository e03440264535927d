"""curate download against a real HTTP server on 127.0.0.1 with real photos and broken responses."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curate.download import DownloadOptions, FetchPolicy, complete_shards, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset, load_schema

from .conftest import samples_table  # noqa: E402


def _opts(**kw) -> DownloadOptions:
    policy = FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=1.5)
    base = dict(samples_per_shard=10, thread_count=8, timeout=2.0, min_image_size=8, policy=policy)
    base.update(kw)
    return DownloadOptions(**base)


def _pool(server, photos):
    """(url, caption, expected error class or None for success, served bytes or None)."""
    b = server.base
    rows = [(f"{b}/img/{p.name}", f"photo {i} of a scene", None, p.read_bytes()) for i, p in enumerate(photos[:12])]
    rows += [
        (f"{b}/missing", "gone", "http_404", None),
        (f"{b}/forbidden", "forbidden", "http_error", None),
        (f"{b}/truncated.jpg", "half a photo", "decode_error", None),
        (f"{b}/page.html", "an html page", "not_an_image", None),
        (f"{b}/fake.jpg", "html served as jpeg", "not_an_image", None),
        (f"{b}/slow.jpg", "slow server", "timeout", None),
        (f"{b}/dribble.jpg", "endless body", "timeout", None),
        (f"{b}/bomb.png", "decompression bomb", "too_large", None),
        (f"{b}/tiny.gif", "tracking pixel", "too_small", None),
        (f"{b}/noai/{photos[12].name}", "opted out", "robots_optout", None),
        (f"{b}/ours/{photos[13].name}", "opted out for curate", "robots_optout", None),
        (f"{b}/otherbot/{photos[14].name}", "opt-out for another bot", None, photos[14].read_bytes()),
        (f"{b}/redirect/{photos[15].name}", "redirected", None, photos[15].read_bytes()),
        (f"{b}/redirect-metadata", "redirect to cloud metadata", "blocked_address", None),
        (f"{b}/redirect-loopback", "redirect to another loopback address", "blocked_address", None),
        ("http://10.1.2.3/x.jpg", "private network", "blocked_address", None),
        ("http://169.254.169.254/latest/meta-data/", "metadata", "blocked_address", None),
        ("file:///etc/passwd", "local file", "blocked_file_url", None),
        (f"{b}/flaky/{photos[16].name}", "fails once", "http_error", photos[16].read_bytes()),
    ]
    return rows


def _read_tar(path):
    members = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            members[m.name] = tf.extractfile(m).read()
    return members


def test_every_uid_once_with_status_reason_and_exact_bytes(tmp_path, image_server, photos):
    pool = _pool(image_server, photos)
    samples = samples_table([(u, t) for u, t, _, _ in pool])
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples, schema="samples")

    stats = run_download(ds, LocalExecutor(), _opts())

    table = ds.read("downloads", schema="downloads")
    load_schema("downloads").validate(table)
    rows = {r["uid"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == samples.num_rows  # every uid exactly once
    assert stats["success"] + stats["failed"] == len(pool)
    assert table.column("uid").to_pylist() == sorted(rows)
    tars = {}
    for uid, (url, text, expected, served) in zip(samples.column("uid").to_pylist(), pool):
        r = rows[uid]
        assert r["attempts"] == 1, url
        if expected is None:
            assert (r["status"], r["error_class"], r["error_message"]) == ("success", None, None), (url, r)
            assert r["sha256"] == hashlib.sha256(served).hexdigest()
            assert r["shard"].startswith("images/") and r["shard"].endswith(".tar")
            members = tars.setdefault(r["shard"], _read_tar(ds.root / r["shard"]))
            assert members[f"{r['key']}.jpg"] == served  # small JPEGs are kept byte for byte
            assert members[f"{r['key']}.txt"].decode() == text
            assert json.loads(members[f"{r['key']}.json"])["uid"] == uid
            assert (r["width"], r["height"]) == (r["original_width"], r["original_height"])
            from PIL import Image
            assert Image.open(io.BytesIO(served)).size == (r["width"], r["height"])
        else:
            assert r["status"] == "failed" and r["error_class"] == expected, (url, r)
            assert r["error_message"] and r["shard"] is None and r["key"] is None and r["sha256"] is None
    assert sum(stats["failed_by_class"].values()) == stats["failed"]
    # an honest user agent on every request; nothing ever reached the refused addresses
    assert {ua for _, ua in image_server.requests} == {ua for _, ua in image_server.requests if ua.startswith("curate/")}
    assert all("127.0.0.2" not in p for p, _ in image_server.requests)
    manifest = json.loads((ds.root / "_runs" / "download.json").read_text())
    assert manifest["counts"]["success"] == stats["success"]


def test_retries_ask_again_only_after_an_error_another_attempt_can_change(tmp_path, image_server, photos):
    """img2dataset's retry loop asked a server --retries more times for a 404, a 403, an opt-out
    and a page that is no image (each the same answer again); a 500 is asked again and loads."""
    b = image_server.base
    pool = [(f"{b}/img/{photos[0].name}", "a photo"), (f"{b}/missing", "gone"), (f"{b}/forbidden", "forbidden"),
            (f"{b}/page.html", "an html page"), (f"{b}/noai/{photos[1].name}", "opted out"),
            (f"{b}/tiny.gif", "tracking pixel"), (f"{b}/flaky/{photos[2].name}", "fails once")]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")

    stats = run_download(ds, LocalExecutor(), _opts(retries=3))

    asked = {}
    for path, _ in image_server.requests:
        asked[path] = asked.get(path, 0) + 1
    assert asked == {p.removeprefix(b): 2 if "/flaky/" in p else 1 for p, _ in pool}, asked
    rows = {r["url"]: r for r in ds.read("downloads").join(ds.read("samples"), "uid").to_pylist()}
    assert stats["success"] == 2 and rows[pool[-1][0]]["status"] == "success"
    assert [rows[u]["error_class"] for u, _ in pool[1:-1]] == ["http_404", "http_error", "not_an_image",
                                                               "robots_optout", "too_small"]


def test_which_errors_are_transient():
    from curate.download.error_classes import is_transient

    again = ["timed out: no data for 10s (--timeout)", "HTTP Error 503: Service Unavailable", "HTTP Error 429: slow down",
             "HTTP Error 500: Internal Server Error", "<urlopen error [Errno 111] Connection refused>",
             "connection closed early: body shorter than its Content-Length", "something nobody classed"]
    same = ["HTTP Error 404: Not Found", "HTTP Error 403: Forbidden", "HTTP Error 501: Not Implemented",
            "HTTP Error 404: timed out", "blocked address 10.1.2.3 (private network)", "blocked file URL",
            "robots opt-out (X-Robots-Tag: noai)", "not an image (content starts with b'<html')", "image too small",
            None]
    assert [is_transient(m) for m in again] == [True] * len(again)
    assert [is_transient(m) for m in same] == [False] * len(same)


def _pool_with_a_flaky_and_a_missing_url(tmp_path, image_server, photos, good: int):
    """``good`` photos, one that fails once (500) then loads, one 404: (dataset, pool, uid by url)."""
    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:good])]
    pool += [(f"{b}/flaky/{photos[good].name}", "flaky"), (f"{b}/missing", "gone")]
    ds = Dataset(tmp_path / "ds")
    samples = samples_table(pool)
    ds.write_table("samples", samples, schema="samples")
    return ds, pool, dict(zip([u for u, _ in pool], samples.column("uid").to_pylist()))


def test_retry_failed_merges_and_a_finished_download_reruns_as_noop(tmp_path, image_server, photos, monkeypatch):
    ds, pool, uid = _pool_with_a_flaky_and_a_missing_url(tmp_path, image_server, photos, good=5)

    first = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4))
    before = {r["uid"]: r for r in ds.read("downloads").to_pylist()}
    assert first["success"] == 5 and before[uid[pool[5][0]]]["error_class"] == "http_error"
    n_requests = len(image_server.requests)

    # plain rerun: every uid already has a result in a complete shard -> nothing fetched
    again = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4))
    assert again["skipped"] and again["to_download"] == 0
    assert len(image_server.requests) == n_requests

    # only transient classes: the 404 and the 500 are not timeouts -> nothing to retry
    narrow = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4), retry_failed=True, retry_classes=["timeout"])
    assert narrow["to_download"] == 0 and narrow["skipped"]
    assert len(image_server.requests) == n_requests
    # a class alone implies --retry-failed (it used to retry nothing, silently): the 500 again
    # (http_error), not the 404 (http_404)
    one = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4), retry_classes=["http_error"])
    assert one["to_download"] == 1 and one["retried"] == 1
    n_requests += 1

    retry = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4), retry_failed=True)
    assert retry["to_download"] == 1 and retry["retried"] == 1
    assert len(image_server.requests) == n_requests + 1  # only the failed uids were asked for
    after = {r["uid"]: r for r in ds.read("downloads").to_pylist()}
    assert set(after) == set(before)
    flaky = after[uid[pool[5][0]]]
    assert flaky["status"] == "success" and flaky["attempts"] == 2
    assert flaky["shard"] == "images/00000002.tar"  # retries land in new shards after the existing ones
    assert after[uid[pool[6][0]]]["error_class"] == "http_404" and after[uid[pool[6][0]]]["attempts"] == 2
    for u, r in before.items():  # earlier successes are untouched
        if r["status"] == "success":
            assert after[u] == r
    assert complete_shards(ds) == [0, 1, 2, 3]  # the class-only retry's shard, then the 404's

    # the table does not depend on how the uids meet their attempts: a group per uid (an
    # 8-digit prefix) writes the bytes of the pool-sized prefix (one digit here)
    from curate.download import results
    from curate.download.todo import samples_frame
    from curate.uid import hex_prefix_chars

    assert hex_prefix_chars(len(pool), results.GROUP_ROWS) == 1
    want = [p.read_bytes() for p in ds.shards("downloads")]
    monkeypatch.setattr(results, "GROUP_ROWS", 0)
    ex = LocalExecutor()
    results.write_downloads_table(ds, ex, samples_frame(ds, ex), len(pool))
    assert [p.read_bytes() for p in ds.shards("downloads")] == want


def test_a_retry_stopped_before_its_table_was_written_is_not_taken_from_the_stale_table(tmp_path, image_server,
                                                                                       photos):
    """A --retry-failed run that completed a shard and was stopped before it rewrote downloads:
    the rerun's retry set came from the stale table (the successes were fetched again, into two
    shards), and a rerun without the flag said "nothing to do" over a table the shards contradict."""
    import os

    ds, pool, uid = _pool_with_a_flaky_and_a_missing_url(tmp_path, image_server, photos, good=3)
    run_download(ds, LocalExecutor(), _opts(samples_per_shard=4))
    stale = [(p, p.read_bytes(), p.stat().st_mtime_ns) for p in ds.shards("downloads")]
    retry = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4), retry_failed=True)
    assert retry["to_download"] == 2 and ds.read("downloads").num_rows == 5  # the flaky one now succeeds

    def stop_before_the_table():  # the table as the stopped run left it: the first run's, older than the shard
        for p in ds.shards("downloads"):
            p.unlink()
        for p, data, ns in stale:
            p.write_bytes(data)
            os.utime(p, ns=(ns, ns))

    stop_before_the_table()
    n_requests = len(image_server.requests)
    again = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4), retry_failed=True)
    assert again["to_download"] == again["retried"] == 1  # the 404 only: the flaky one's success stands
    assert len(image_server.requests) == n_requests + 1
    rows = {r["uid"]: r for r in ds.read("downloads").to_pylist()}
    assert rows[uid[pool[3][0]]]["status"] == "success" and rows[uid[pool[3][0]]]["attempts"] == 2
    assert rows[uid[pool[4][0]]]["attempts"] == 3

    stop_before_the_table()
    plain = run_download(ds, LocalExecutor(), _opts(samples_per_shard=4))
    assert not plain["skipped"] and plain["to_download"] == 0  # the table is brought to the shards
    assert {r["uid"]: r for r in ds.read("downloads").to_pylist()} == rows
    assert run_download(ds, LocalExecutor(), _opts(samples_per_shard=4))["skipped"]
    # a run that changed nothing keeps the manifest of the run that did (its counts and options)
    assert json.loads((ds.root / "_runs" / "download.json").read_text())["counts"]["success"] == 4


def test_a_run_whose_every_shard_failed_is_an_error_not_a_success(tmp_path, image_server, photos, monkeypatch):
    """Shards whose task raised (a read-only disk) were dropped: exit 0 over a table of
    not_downloaded rows, which a script took for success."""
    from curate.errors import DatasetError

    pool = [(f"{image_server.base}/img/{p.name}", "x") for p in photos[:3]]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")
    ex = LocalExecutor()
    # every shard's task fails as img2dataset's do: it reports the error and writes no shard
    monkeypatch.setattr(ex, "run_img2dataset", lambda *a, **k: None)
    with pytest.raises(DatasetError, match=r"none of this run's 1 image shards completed .* 3 samples are "
                                           "not_downloaded"):
        run_download(ds, ex, _opts(samples_per_shard=4))
    assert set(ds.read("downloads")["error_class"].to_pylist()) == {"not_downloaded"}


def test_hash_prefix_groups_hold_about_per_group_rows():
    from curate.uid import hex_prefix_chars

    g = 100_000
    assert hex_prefix_chars(0, g) == hex_prefix_chars(16 * g, g) == 1
    assert hex_prefix_chars(16 * g + 1, g) == 2
    for n in (10**6, 10**8, 12_800_000_000):  # up to DataComp's xlarge pool
        chars = hex_prefix_chars(n, g)
        assert n / 16**chars <= g < n / 16 ** (chars - 1)
    assert hex_prefix_chars(10**30, g) == 8


def test_killed_run_resumes_without_duplicates(tmp_path, image_server, photos):
    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:9])]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")
    run_download(ds, LocalExecutor(), _opts(samples_per_shard=3))
    # simulate a kill during shard 1: its completion marker never got written, no table yet
    (ds.root / "images" / "00000001_stats.json").unlink()
    for p in ds.shards("downloads"):
        p.unlink()
    n_requests = len(image_server.requests)

    stats = run_download(ds, LocalExecutor(), _opts(samples_per_shard=3))
    assert stats["to_download"] == 3 and stats["removed_incomplete_files"] == 2  # its tar and parquet
    assert len(image_server.requests) == n_requests + 3
    t = ds.read("downloads")
    assert t.num_rows == 9 and len(set(t.column("uid").to_pylist())) == 9
    assert pc.all(pc.equal(t.column("status"), "success")).as_py()
    assert sorted(set(t.column("shard").to_pylist())) == ["images/00000000.tar", "images/00000002.tar", "images/00000003.tar"]
    assert not (ds.root / "images" / "00000001.tar").exists()


def test_default_policy_refuses_loopback_before_connecting(tmp_path, image_server, photos):
    from curate.cli import main

    pool = [(f"{image_server.base}/img/{p.name}", "x") for p in photos[:3]]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(pool), schema="samples")
    with pytest.raises(SystemExit) as exit_info:
        main(["download", str(ds.root), "--engine", "local", "--threads", "4"])
    assert exit_info.value.code in (0, None)
    t = ds.read("downloads")
    assert t.column("error_class").to_pylist() == ["blocked_address"] * 3
    assert all("127.0.0.1 (loopback)" in m for m in t.column("error_message").to_pylist())
    assert image_server.requests == []


@pytest.mark.slow
def test_pyspark_distributor_gives_the_same_results_as_the_local_loop(tmp_path, image_server, photos, spark):
    from curate.engine.spark import SparkExecutor

    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:7])]
    pool += [(f"{b}/missing", "gone"), (f"{b}/page.html", "html"), (f"{b}/bomb.png", "bomb")]
    results = {}
    for name, executor in (("spark", SparkExecutor(spark)), ("local", LocalExecutor())):
        ds = Dataset(tmp_path / name)
        ds.write_table("samples", samples_table(pool), schema="samples")
        run_download(ds, executor, _opts(samples_per_shard=4))
        t = ds.read("downloads")
        results[name] = t.select(["uid", "status", "error_class", "sha256", "width", "height", "shard", "key"]).to_pylist()
        assert complete_shards(ds) == [0, 1, 2]
    assert results["spark"] == results["local"]
    assert sum(r["status"] == "success" for r in results["spark"]) == 7
    assert spark.range(3).count() == 3  # img2dataset left our session running


def test_each_task_reads_its_own_todo_part_as_img2datasets_reader_would_cut_it(tmp_path, image_server, photos,
                                                                               monkeypatch):
    """The driver lists the todo parts (one per image shard) and each download task reads its
    own part; the image shards' tars and Parquet files are byte for byte those of img2dataset's
    own reader, which cut every part into feather files on the driver (the code before): the
    same members, and the same rows with the same schema (img2dataset writes a shard's samples
    in the order its threads finish, so the order within a shard varies from run to run)."""
    from img2dataset.reader import Reader

    from curate.download import job
    from curate.download.todo import TODO_TABLE

    b = image_server.base
    pool = [(f"{b}/img/{p.name}", f"c{i}") for i, p in enumerate(photos[:9])] + [(f"{b}/missing", "gone")]

    def with_img2datasets_reader(dataset, first_shard, carried, opts, executor, digits=job.SHARD_DIGITS):
        tmp = str(dataset.path(f"{job.WORK}/tmp"))
        (dataset.root / job.IMAGES).mkdir(parents=True, exist_ok=True)
        (dataset.root / job.WORK / "tmp").mkdir(parents=True, exist_ok=True)
        reader = Reader(str(dataset.table_dir(TODO_TABLE)), "parquet", "url", "text", None, None, carried,
                        opts.samples_per_shard, set(), tmp, first_shard)
        assert reader.column_list == [*carried, "caption", "url"]
        executor.run_img2dataset(job._make_downloader(dataset, reader.column_list, opts, digits), reader,
                                 opts.processes_count, opts.subjob_size, opts.max_shard_retry)

    def shard_files(images) -> dict:
        files = {p.name: _read_tar(p) for p in images.glob("*.tar")}
        for p in images.glob("*.parquet"):
            t = pq.read_table(p)
            files[p.name] = (t.schema, t.schema.metadata, t.sort_by("key").to_pylist())
        return files

    parts: list = []
    real_todo_shards = job.todo_shards

    def listed(*a):
        parts.extend(real_todo_shards(*a))
        return parts

    files = {}
    for name in ("tasks", "reader"):
        ds = Dataset(tmp_path / name)
        ds.write_table("samples", samples_table(pool), schema="samples")
        with monkeypatch.context() as m:
            if name == "reader":
                m.setattr(job, "_run_img2dataset", with_img2datasets_reader)
            else:
                m.setattr(job, "todo_shards", listed)
            run_download(ds, LocalExecutor(), _opts(samples_per_shard=3, thread_count=2))
        files[name] = shard_files(ds.root / "images")
    assert [(i, p.rsplit("/", 1)[1]) for i, p in parts] == [(i, f"part-{i:05d}.parquet") for i in range(4)]
    assert len(files["tasks"]) == 8 and files["tasks"] == files["reader"]


def test_one_download_per_dataset_at_a_time(tmp_path, image_server, photos):
    import fcntl

    from curate.errors import DatasetError

    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table([(f"{image_server.base}/img/{photos[0].name}", "x")]), schema="samples")
    with open(ds.root / "_curate.lock", "w") as held:  # another run holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DatasetError, match="is being written by"):
            run_download(ds, LocalExecutor(), _opts())
    assert run_download(ds, LocalExecutor(), _opts())["success"] == 1


def test_the_driver_gets_counts_not_rows(tmp_path):
    """What reaches the driver through the engine interface (``driver_counter``, counted the same
    by both executors) does not grow with the pool: the uids to fetch and the downloads table are
    made and written by the workers."""
    seen = {}
    for n in (30, 300):
        ds = Dataset(tmp_path / f"n{n}")
        # refused before any connection: the same outcome for every row, whatever the machine's load
        ds.write_table("samples", samples_table([(f"file:///nowhere/{i}.jpg", f"gone {i}") for i in range(n)]),
                       schema="samples")
        ex = LocalExecutor()
        stats = run_download(ds, ex, _opts(samples_per_shard=1000, thread_count=32))
        assert stats["samples"] == n and stats["failed_by_class"] == {"blocked_file_url": n}
        assert ds.count("downloads") == n and complete_shards(ds) == [0]
        seen[n] = dict(ex.driver_counter.by_call)
    assert seen[300] == seen[30], seen


def test_a_full_disk_stops_the_download_in_one_line_and_no_shard_claims_it_is_done(tmp_path, image_server, photos,
                                                                                     monkeypatch, capfd):
    """Each sample's write failing with ENOSPC printed a traceback from img2dataset (80,000 lines
    on a small pool): now the shard's first such error stops its writes, no file of the shard is
    left to say it completed, and the job fails once with the disk's error."""
    import errno

    from img2dataset.writer import WebDatasetSampleWriter

    from curate.errors import DatasetError

    written = []

    def full(self, *args, **kwargs):
        written.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(WebDatasetSampleWriter, "write", full)
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table([(f"{image_server.base}/img/{p.name}", f"photo {i}")
                                             for i, p in enumerate(photos[:8])]), schema="samples")
    with pytest.raises(DatasetError, match=r"cannot write the images of shard 0 to .*: No space left on device"):
        run_download(ds, LocalExecutor(), _opts(samples_per_shard=8))
    out = capfd.readouterr()
    assert len(written) == 1 and "Traceback" not in out.out + out.err
    assert complete_shards(ds) == [] and not list((ds.root / "images").glob("0*"))
    monkeypatch.undo()  # space again: the rerun downloads the shard whole
    run_download(ds, LocalExecutor(), _opts(samples_per_shard=8))
    assert complete_shards(ds) == [0] and ds.count("downloads") == 8
