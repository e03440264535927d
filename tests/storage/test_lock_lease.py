"""The dataset lock on an object store has a lease its holder renews (curate.object_lock):
a holder that is gone, on any host, is taken over once its lease ran out; a live one is not;
of several writers taking over at once exactly one gets it; and a holder that finds its lock
taken over stops. Real S3 (moto's standalone server) and GCS (the emulator) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import boto3
import pytest

from curate.lock import LOCK_FILE, DatasetLockedError, acquire, release
from gcskit import gs_objects
from s3kit import bucket_objects

# a holder that takes the lock and keeps it; with the CLI's handlers, as a command holds it
HOLDER = """
import signal, sys, time
from curate.cli import _on_interrupt, cli_errors
from curate.lock import acquire
signal.signal(signal.SIGINT, _on_interrupt)
with cli_errors():
    acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(120)
"""


def _lock_object(bucket: str) -> tuple[dict, str]:
    got = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).get_object(Bucket=bucket,
                                                                                  Key=f"ds/{LOCK_FILE}")
    return json.loads(got["Body"].read()), got["ETag"]


def _put_lock(bucket: str, info: dict) -> None:
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).put_object(
        Bucket=bucket, Key=f"ds/{LOCK_FILE}", Body=(json.dumps(info) + "\n").encode())


def _start_holder(root: str, lease: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, root], env=dict(os.environ, CURATE_LOCK_LEASE_S=lease),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "held\n", p.stderr.read()
    return p


def test_a_live_holder_renews_and_a_frozen_one_is_taken_over_and_stops(bucket):
    root = f"s3://{bucket}/ds"
    holder = _start_holder(root, "3")
    try:
        info, etag = _lock_object(bucket)
        assert info["pid"] == holder.pid and info["lease_s"] == 3
        time.sleep(6.5)  # over two leases: without renewals the lock would be stale by now
        renewed, etag2 = _lock_object(bucket)
        assert etag2 != etag and renewed["token"] == info["token"]  # rewritten by its holder, same acquisition
        with pytest.raises(DatasetLockedError) as e:
            acquire(root)
        msg = str(e.value)
        assert msg.startswith(f"dataset {root} is being written by pid {holder.pid} on ") and "\n" not in msg
        assert "s ago; taken over once not renewed for 3 s" in msg

        os.kill(holder.pid, signal.SIGSTOP)  # alive, but renews nothing (a frozen or cut-off driver)
        time.sleep(6.5)
        acquire(root)  # the same host and a live pid: taken over by the lease alone
        try:
            mine, _ = _lock_object(bucket)
            assert mine["pid"] == os.getpid() and mine["token"] != info["token"]
            os.kill(holder.pid, signal.SIGCONT)
            # its next renewal finds the lock taken over: it stops as on Ctrl-C, saying why
            _, err = holder.communicate(timeout=30)
            assert holder.returncode == 130
            assert err.splitlines() == [
                (f"curate: error: lost the write lock {root}/{LOCK_FILE} to pid {os.getpid()} on {mine['host']} "
                 f"since {mine['started']}, running `{mine['command']}` (this process could not renew it for 3 s); "
                 "stopped so that two writers do not write the dataset at once")]
            assert _lock_object(bucket)[0]["token"] == mine["token"]  # and left ours alone
        finally:
            release(root)
        assert LOCK_FILE not in bucket_objects(bucket, "ds/")
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait()


def test_a_holder_gone_from_another_host_is_taken_over_after_its_lease(bucket, capsys):
    """A driver killed on one machine and rerun on another (a rescheduled pod): no pid to ask,
    so the lease decides. A lock from a curate that renews nothing (no lease) stays, and the
    error says to delete it."""
    root = f"s3://{bucket}/ds"
    gone = {"pid": 4242, "host": "another-host", "command": "curate dedup exact", "started": "2026-12-04T00:00:00Z",
            "token": "0" * 32, "lease_s": 4}
    _put_lock(bucket, gone)
    with pytest.raises(DatasetLockedError, match="pid 4242 on another-host .*taken over once not renewed for 4 s"):
        acquire(root)
    time.sleep(5.2)  # the store's clock: its Date header less the object's Last-Modified (1 s resolution)
    capsys.readouterr()
    acquire(root)
    err = capsys.readouterr().err
    assert "took over the lock" in err and "that writer did not finish (`curate dedup exact`)" in err
    assert "tables it was writing may be partial" in err
    try:
        assert _lock_object(bucket)[0]["pid"] == os.getpid()
    finally:
        release(root)
    assert LOCK_FILE not in bucket_objects(bucket, "ds/")

    _put_lock(bucket, {k: v for k, v in gone.items() if k not in ("token", "lease_s")})
    time.sleep(1.5)
    with pytest.raises(DatasetLockedError, match=r"lock object .*; delete it if that process is gone\)$"):
        acquire(root)


def test_of_several_writers_taking_over_a_stale_lock_one_gets_it(bucket):
    """The takeover is a PUT conditional on the stale object's ETag: of four processes that see
    the same stale lock at once, exactly one holds it after; the others name that one."""
    root = f"s3://{bucket}/ds"
    _put_lock(bucket, {"pid": 1, "host": "another-host", "command": "curate filter", "started": "2026-12-04T00:00:00Z",
                       "token": "1" * 32, "lease_s": 1})
    time.sleep(2.2)
    start = time.time() + 3  # every process past its imports, then all at the same instant
    code = (f"import sys, time; from curate.lock import acquire, DatasetLockedError\n"
            f"time.sleep(max(0, {start} - time.time()))\n"
            f"try:\n    acquire({root!r})\nexcept DatasetLockedError as e:\n    print('refused', e); sys.exit(3)\n"
            f"print('held'); time.sleep(10)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    held = [p.pid for p, (out, _) in zip(procs, outs) if out.startswith("held")]
    refused = [out for out, _ in outs if out.startswith("refused")]
    assert len(held) == 1 and len(refused) == 3, outs
    assert all(f"being written by pid {held[0]} on " in out for out in refused)


def test_a_bad_lease_setting_is_one_line(bucket, monkeypatch):
    monkeypatch.setenv("CURATE_LOCK_LEASE_S", "soon")
    with pytest.raises(Exception, match=r"^CURATE_LOCK_LEASE_S='soon': expected a number of seconds above 0$"):
        acquire(f"s3://{bucket}/ds")
    assert LOCK_FILE not in bucket_objects(bucket, "ds/")


def test_gs_lock_lease_is_renewed_and_a_stale_one_taken_over(gs_bucket, monkeypatch):
    """On gs:// (advisory: pyarrow exposes no preconditions) the same lease: renewed by its
    holder, taken over once stale, by this host's clock against the object's time."""
    from curate import storage

    root = f"gs://{gs_bucket}/ds"
    monkeypatch.setenv("CURATE_LOCK_LEASE_S", "1")
    acquire(root)
    try:
        first = json.loads(gs_objects(gs_bucket, "ds/")[LOCK_FILE])
        time.sleep(1.5)
        again = json.loads(gs_objects(gs_bucket, "ds/")[LOCK_FILE])
        assert again["token"] == first["token"] and again["renewed"] != first["renewed"]
    finally:
        release(root)
    assert LOCK_FILE not in gs_objects(gs_bucket, "ds/")
    stale = {"pid": 7, "host": "another-host", "command": "curate ingest", "started": "2026-12-04T00:00:00Z",
             "token": "2" * 32, "lease_s": 3}
    storage.put_bytes(storage.resolve(f"{root}/{LOCK_FILE}"), (json.dumps(stale) + "\n").encode())
    with pytest.raises(DatasetLockedError, match="pid 7 on another-host"):
        acquire(root)
    time.sleep(4.2)
    acquire(root)
    try:
        assert json.loads(gs_objects(gs_bucket, "ds/")[LOCK_FILE])["pid"] == os.getpid()
    finally:
        release(root)


def test_a_lock_deleted_by_hand_is_written_again_by_its_live_holder(bucket, monkeypatch):
    """Someone deletes a live holder's lock object (the old advice for a stuck lock): while no
    other writer took it, the holder's next renewal creates it again, so it stays exclusive."""
    root = f"s3://{bucket}/ds"
    monkeypatch.setenv("CURATE_LOCK_LEASE_S", "1")
    acquire(root)
    try:
        token = _lock_object(bucket)[0]["token"]
        boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).delete_object(Bucket=bucket,
                                                                                     Key=f"ds/{LOCK_FILE}")
        deadline = time.time() + 10
        while LOCK_FILE not in bucket_objects(bucket, "ds/") and time.time() < deadline:
            time.sleep(0.05)  # a renewal every 0.2 s
        assert _lock_object(bucket)[0]["token"] == token
        other = subprocess.run([sys.executable, "-c", f"from curate.lock import acquire; acquire({root!r})"],
                               check=False, capture_output=True, text=True)
        assert other.returncode != 0 and f"is being written by pid {os.getpid()} on " in other.stderr
    finally:
        release(root)
    assert LOCK_FILE not in bucket_objects(bucket, "ds/")


@pytest.mark.slow
def test_ctrl_c_of_a_spark_job_into_a_bucket_leaves_no_lock_behind(bucket, tmp_path):
    """Ctrl-C while Spark runs ends the process at once (os._exit after killing the JVM); the
    dataset's lock object is deleted first, so the next writer, from any host, need not wait
    for its lease."""
    rows = [json.dumps({"url": f"http://127.0.0.1/{i}.jpg", "caption": f"a photo number {i}"}) for i in range(600)]
    (tmp_path / "pool.jsonl").write_text("\n".join(rows) + "\n")
    root = f"s3://{bucket}/ds"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               CURATE_WORK_DIR=str(tmp_path / "work"))
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "ingest", str(tmp_path / "pool.jsonl"), "-o", root,
                             "--rows-per-shard", "5", "--master", "local[2]"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # Spark is writing the tables
            if any("/_committed/" in k for k in bucket_objects(bucket, "ds/")):
                break
            time.sleep(0.05)
        assert LOCK_FILE in bucket_objects(bucket, "ds/")
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out[-3000:]
    assert out.splitlines()[-1] == "curate: interrupted; rerun the same command to resume"
    assert LOCK_FILE not in bucket_objects(bucket, "ds/")
