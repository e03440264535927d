"""`curate download` of images named by store URLs (``s3://bench/imgs/0.jpg``, read through
curate.storage under ``--allow-store-prefix``) against the same images named by ``file://``
URLs, in the same process.

``--images`` JPEGs of 256 x 192 noise (about 40 KB) are written to a local folder and put in a
bucket of moto's standalone server on 127.0.0.1; a dataset of samples naming them each way is
downloaded with the in-process engine (the same resize and checks for both). Printed: wall
time, images/s, the requests the server logged, and the ratio store / file. The loopback server
answers in about a millisecond, so this is the cost curate adds per store URL (two requests an
image); on a real store each request adds its latency, which the download's threads overlap.
Run from a checkout:

    python bench/download_store_urls.py [--images 2000] [--threads 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "storage"))
sys.path.insert(0, str(REPO / "bench"))


def _download(root: Path, urls: list[str], threads: int, prefixes: list[str]) -> dict:
    import pyarrow as pa

    from curate.download import DownloadOptions, FetchPolicy, run_download
    from curate.engine import LocalExecutor
    from curate.tables import Dataset, load_schema
    from curate.uid import derive_uid

    n = len(urls)
    t = pa.table({"uid": [derive_uid(u, "c") for u in urls], "url": urls, "text": ["c"] * n,
                  "source_file": ["bench"] * n, "source_row": pa.array(range(n), pa.int64()),
                  "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
                  "extra": pa.nulls(n, pa.string())})
    ds = Dataset(root)
    ds.write_table("samples", load_schema("samples").conform(t.sort_by("uid")), schema="samples")
    policy = FetchPolicy(allow_file_urls=True, allow_store_prefixes=prefixes)
    t0 = time.perf_counter()
    stats = run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=1000, thread_count=threads,
                                                              policy=policy))
    wall = time.perf_counter() - t0
    if stats["success"] != n:
        sys.exit(f"{root.name}: {stats['success']} of {n} downloaded: {stats.get('failed_by_class')}")
    return {"wall_s": wall, "images_per_s": n / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    from scale import in_scratch

    return in_scratch("curate-bench-store-urls-", lambda work: _run(a, work), a.json)


def _run(a, work: Path) -> dict:
    import boto3
    from s3kit import S3_ENV, moto_server
    from scale import noise_jpegs, upload_folder

    os.environ.update(S3_ENV)
    out = {"images": a.images, "threads": a.threads, "code": subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO).stdout.strip()}
    files = noise_jpegs(work / "imgs", a.images)
    with moto_server(work) as url:
        os.environ["AWS_ENDPOINT_URL"] = url
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket="bench")
        keys = upload_folder(s3, work / "imgs", "bench", "imgs/")
        log = work / "server.log"

        def requests() -> int:
            text = log.read_text(errors="replace")
            return text.count("GET /bench/imgs/") + text.count("HEAD /bench/imgs/")

        before = requests()
        _download(work / "ds-warm", [f.as_uri() for f in files[:20]], a.threads, [])  # imports, first start
        out["file"] = _download(work / "ds-file", [f.as_uri() for f in files], a.threads, [])
        out["store"] = _download(work / "ds-store", [f"s3://bench/{k}" for k in keys], a.threads,
                                 ["s3://bench/imgs/"])
        time.sleep(1)  # the server's log is written behind its answers
        out["store"]["requests"] = requests() - before
    f, s = out["file"], out["store"]
    out["store_over_file"] = s["wall_s"] / f["wall_s"]
    print(f"{a.images:,} images, {a.threads} threads: file:// {f['wall_s']:.1f} s ({f['images_per_s']:.0f}/s); "
          f"s3:// {s['wall_s']:.1f} s ({s['images_per_s']:.0f}/s, {s['requests']:,} requests); "
          f"store/file {out['store_over_file']:.2f}x", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
