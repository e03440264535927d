"""Ingest with its inputs in a bucket against the same inputs as local files.

A Parquet file (row groups of 65,536 rows) and a TSV file of the same rows (real alt-text from
../shared/data, repeated) are put in a bucket of moto's standalone S3 server on 127.0.0.1; each
is ingested from the bucket and from a local path (`curate ingest ... --engine local`, the
output a local folder), one after the other in this process's machine. Printed per input:
wall time, peak RSS of the ingest process, the bytes it left in the input cache
($CURATE_WORK_DIR/inputs: copies of input objects), and the ratio bucket / local.

The loopback server holds objects in memory, so the bucket's own cost is a lower bound of a
real store's; what this shows is the copy a run makes (or does not make) before reading.
Run from a checkout (its `curate` is the one measured):

    python bench/ingest_inputs_bucket.py --rows 400000 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "tests" / "storage"))
sys.path.insert(0, str(REPO / "bench"))


def _pool(rows: int) -> pa.Table:
    src = DATA / "alttext" / "web_alttext_10k.parquet"
    if not src.exists():
        sys.exit(f"shared data not found: {src}")
    t = pq.read_table(src, columns=["URL", "TEXT"])
    t = pa.concat_tables([t] * -(-rows // t.num_rows)).slice(0, rows).combine_chunks()
    # distinct urls (a repeat of the 10k rows is a new sample), captions as they are
    urls = pa.array([f"http://127.0.0.1/img/{i}.jpg" for i in range(rows)])
    text = pa.array([(s or "").replace("\t", " ").replace("\n", " ").replace("\r", " ").replace('"', "'")
                     for s in t.column("TEXT").to_pylist()])
    return pa.table({"url": urls, "caption": text})


def _ingest(inp: str, out: Path, work: Path) -> dict:
    from scale import PeakRss

    env = {**os.environ, "CURATE_WORK_DIR": str(work)}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "curate.cli", "ingest", inp, "-o", str(out), "--engine", "local"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd())
    mon = PeakRss(p.pid)
    mon.start()
    _, err = p.communicate()
    wall = time.perf_counter() - t0
    mon.stop()
    if p.returncode:
        sys.exit(f"ingest {inp} failed:\n{err[-2000:]}")
    cache = work / "inputs"
    copied = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if cache.exists() else 0
    return {"wall_s": wall, "peak_rss": mon.tree, "input_cache_bytes": copied}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    import boto3
    from s3kit import S3_ENV, moto_server

    os.environ.update(S3_ENV)
    work = Path(tempfile.mkdtemp(prefix="curate-bench-inputs-"))
    out = {"rows": a.rows, "code": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                  text=True, cwd=os.getcwd()).stdout.strip(), "inputs": {}}
    try:
        pool = _pool(a.rows)
        pq.write_table(pool, work / "pool.parquet", row_group_size=65536)
        pacsv.write_csv(pool, work / "pool.tsv", pacsv.WriteOptions(delimiter="\t", quoting_style="none"))
        with moto_server(work) as url:
            os.environ["AWS_ENDPOINT_URL"] = url
            s3 = boto3.client("s3", endpoint_url=url)
            s3.create_bucket(Bucket="bench")
            for name in ("pool.parquet", "pool.tsv"):
                s3.upload_file(str(work / name), "bench", f"in/{name}")
                size = (work / name).stat().st_size
                local = _ingest(str(work / name), work / f"out-local-{name}", work / f"w-local-{name}")
                bucket = _ingest(f"s3://bench/in/{name}", work / f"out-bucket-{name}", work / f"w-bucket-{name}")
                out["inputs"][name] = {"bytes": size, "local": local, "bucket": bucket}
                print(f"{name} ({size / 2**20:.0f} MiB, {a.rows:,} rows): local {local['wall_s']:.1f} s "
                      f"{local['peak_rss'] / 2**20:.0f} MiB; bucket {bucket['wall_s']:.1f} s "
                      f"{bucket['peak_rss'] / 2**20:.0f} MiB, copied {bucket['input_cache_bytes'] / 2**20:.0f} MiB; "
                      f"bucket/local {bucket['wall_s'] / local['wall_s']:.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
