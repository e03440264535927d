"""Requests and time to read objects from an S3-compatible store: curate's readers against the
raw pyarrow reads they replace, in the same process.

Every read of a pyarrow input stream or random-access file on S3 is a ranged request, and
readers read small (tarfile's stream mode 10 KiB at a time, numpy an .npz member 256 KiB, an
input stream's ``read()`` 256 KiB). Objects are put in a bucket of moto's standalone server on
127.0.0.1; each read is done the old way (the raw pyarrow object, as curate did before session
17) and through ``curate.storage``; the requests are counted in the server's access log.

The loopback server's ranged reads cost the size of the whole object each, so its times
overstate what many small requests cost on a real store and understate what latency adds
(tens of ms a request on S3); the request counts hold on any store. Run from a checkout:

    python bench/store_reads.py [--tar-mib 16] [--json out.json]   (64: the tar alone takes ~6 min the old way)
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "storage"))
sys.path.insert(0, str(REPO / "bench"))


def _tar(mib: int) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(mib * 10):  # images of ~100 KB, as img2dataset writes them
            data = rng.bytes(104_857)
            info = tarfile.TarInfo(f"{i:09d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npz(rows: int) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    np.savez(buf, **{f"{m}_{s}": rng.standard_normal((rows, d)).astype(np.float16)
                     for m, d in (("b32", 512), ("l14", 768)) for s in ("img", "txt")})
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tar-mib", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    import boto3
    from s3kit import S3_ENV, moto_server, requests_for

    os.environ.update(S3_ENV)
    from curate import storage
    from curate.storage.readers import _open_object

    work = Path(tempfile.mkdtemp(prefix="curate-bench-reads-"))
    out = {"code": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                  cwd=REPO).stdout.strip(), "reads": {}}
    with moto_server(work) as url:
        os.environ["AWS_ENDPOINT_URL"] = url
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket="bench")
        objects = {"shard.tar": _tar(a.tar_mib), "shard.npz": _npz(10_000)}
        for key, body in objects.items():
            s3.put_object(Bucket="bench", Key=key, Body=body)

        def measure(key: str, read) -> dict:
            before = requests_for(work, "bench", key)
            t0 = time.perf_counter()
            got = read(f"s3://bench/{key}")
            wall = time.perf_counter() - t0
            return {"requests": requests_for(work, "bench", key) - before, "wall_s": wall, "bytes": got}

        def tar_members(src) -> int:
            with tarfile.open(fileobj=src, mode="r|*") as tf:
                return sum(len(tf.extractfile(m).read()) for m in tf if m.isfile())

        def raw_tar(uri):
            with _open_object(uri, "open_input_stream") as src:
                return tar_members(src)

        def curate_tar(uri):
            with storage.open_input_stream(uri) as src:
                return tar_members(src)

        def raw_whole(uri):
            with _open_object(uri, "open_input_stream") as src:
                return len(src.read())

        def raw_npz(uri):
            with _open_object(uri, "open_input_file") as src, np.load(src, allow_pickle=False) as z:
                return sum(z[k].nbytes for k in z.files)

        def curate_npz(uri):
            with storage.open_npz(uri) as z:
                return sum(z[k].nbytes for k in z.files)

        cases = [("a tar streamed by tarfile (embed, reshard, report)", "shard.tar", raw_tar, curate_tar),
                 ("a whole object (read_bytes)", "shard.npz", raw_whole, lambda u: len(storage.read_bytes(u))),
                 ("a DataComp .npz, every array", "shard.npz", raw_npz, curate_npz)]
        for label, key, old, new in cases:
            base, ours = measure(key, old), measure(key, new)
            assert base["bytes"] == ours["bytes"], label
            out["reads"][label] = {"object_bytes": len(objects[key]), "raw_pyarrow": base, "curate": ours}
            print(f"{label} ({len(objects[key]) / 2**20:.0f} MiB): raw pyarrow {base['requests']} requests "
                  f"{base['wall_s']:.2f} s; curate.storage {ours['requests']} requests {ours['wall_s']:.2f} s; "
                  f"requests {base['requests'] / ours['requests']:.0f}x fewer, time "
                  f"{base['wall_s'] / ours['wall_s']:.1f}x less", flush=True)
    from scale import write_results

    write_results(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
