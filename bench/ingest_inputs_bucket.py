"""Ingest with its inputs in a bucket against the same inputs as local files.

A Parquet file (row groups of 65,536 rows) and a TSV file of the same rows (real alt-text from
../shared/data, repeated), and a DataComp pool as shipped (``--datacomp-shards`` metadata shards of
10,000 rows, each with its uncompressed ``.npz`` of float16 ViT-B/32 and ViT-L/14 image and text
vectors: 51 MB a shard), and an image folder (``--image-folder`` JPEGs of 256 x 192 noise with a
captions file) are put in a bucket of moto's standalone S3 server on 127.0.0.1; each
is ingested from the bucket and from a local path (`curate ingest ... --engine local`, the
output a local folder), one after the other in this process's machine. Printed per input:
wall time, peak RSS of the ingest process, the bytes it left in the input cache
($CURATE_WORK_DIR/inputs: copies of input objects), and the ratio bucket / local.

The loopback server holds objects in memory, so the bucket's own cost is a lower bound of a
real store's; what this shows is the copy a run makes (or does not make) before reading.
Run from a checkout (its `curate` is the one measured):

    python bench/ingest_inputs_bucket.py --rows 400000 --datacomp-shards 4 --image-folder 2000 [--json out.json]
"""

from __future__ import annotations

import argparse
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


DATACOMP_ROWS = 10_000  # rows per DataComp shard here (the pools' shards are about this size)


def _datacomp_pool(folder: Path, shards: int, texts: pa.Array) -> None:
    """DataComp metadata shards and their .npz (np.savez, as DataComp's are); each shipped score
    is the cosine of its row's float16 vectors, as in the real pools."""
    import numpy as np

    folder.mkdir()
    for s in range(shards):
        rng = np.random.default_rng(s)
        arrays, scores = {}, {}
        for name, dim in (("b32", 512), ("l14", 768)):
            img = rng.standard_normal((DATACOMP_ROWS, dim)).astype(np.float16)
            txt = (img.astype(np.float32) + rng.standard_normal((DATACOMP_ROWS, dim))).astype(np.float16)
            a, b = img.astype(np.float32), txt.astype(np.float32)
            scores[f"clip_{name}_similarity_score"] = pa.array(
                (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), pa.float32())
            arrays[f"{name}_img"], arrays[f"{name}_txt"] = img, txt
        first = s * DATACOMP_ROWS
        pq.write_table(pa.table({"uid": [f"{first + i:032x}" for i in range(DATACOMP_ROWS)],
                                 "url": [f"http://127.0.0.1/dc/{first + i}.jpg" for i in range(DATACOMP_ROWS)],
                                 "text": texts.slice(first % (len(texts) - DATACOMP_ROWS), DATACOMP_ROWS), **scores}),
                       folder / f"{s:08d}.parquet")
        np.savez(folder / f"{s:08d}.npz", **arrays)


def _image_folder(folder: Path, n: int, texts: pa.Array) -> None:
    """``n`` noise JPEGs (``scale.noise_jpegs``) and a captions.csv naming them."""
    from scale import noise_jpegs

    rows = ["image,caption"]
    for i, p in enumerate(noise_jpegs(folder, n)):
        caption = str(texts[i % len(texts)]).replace('"', "'").replace(",", " ")
        rows.append(f"{p.relative_to(folder).as_posix()},{caption}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")


def _ingest(inp: str, out: Path, work: Path, *extra: str) -> dict:
    from scale import PeakRss

    env = {**os.environ, "CURATE_WORK_DIR": str(work)}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "curate.cli", "ingest", inp, "-o", str(out), "--engine", "local",
                          *extra],
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
    ap.add_argument("--datacomp-shards", type=int, default=4, help="0: no DataComp pool")
    ap.add_argument("--image-folder", type=int, default=0, help="images in an image folder (0: none)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    import boto3
    from s3kit import S3_ENV, moto_server

    os.environ.update(S3_ENV)
    work = Path(tempfile.mkdtemp(prefix="curate-bench-inputs-"))
    out = {"rows": a.rows, "code": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                                  text=True, cwd=os.getcwd()).stdout.strip(), "inputs": {}}
    try:
        pool = _pool(a.rows)
        pq.write_table(pool, work / "pool.parquet", row_group_size=65536)
        pacsv.write_csv(pool, work / "pool.tsv", pacsv.WriteOptions(delimiter="\t", quoting_style="none"))
        with moto_server(work) as url:
            os.environ["AWS_ENDPOINT_URL"] = url
            s3 = boto3.client("s3", endpoint_url=url)
            s3.create_bucket(Bucket="bench")
            runs = [(name, str(work / name), f"s3://bench/in/{name}", (work / name).stat().st_size, a.rows, ())
                    for name in ("pool.parquet", "pool.tsv")]
            for name in ("pool.parquet", "pool.tsv"):
                s3.upload_file(str(work / name), "bench", f"in/{name}")
            if a.datacomp_shards:
                _datacomp_pool(work / "dc", a.datacomp_shards, pool.column("caption"))
                for f in sorted((work / "dc").iterdir()):
                    s3.upload_file(str(f), "bench", f"dc/{f.name}")
                runs.append(("datacomp", str(work / "dc"), "s3://bench/dc/*.parquet",
                             sum(f.stat().st_size for f in (work / "dc").iterdir()),
                             a.datacomp_shards * DATACOMP_ROWS, ("--format", "datacomp")))
            if a.image_folder:
                from scale import upload_folder

                _image_folder(work / "imgs", a.image_folder, pool.column("caption"))
                upload_folder(s3, work / "imgs", "bench", "imgs/")
                runs.append(("imagefolder", str(work / "imgs"), "s3://bench/imgs/",
                             sum(f.stat().st_size for f in (work / "imgs").rglob("*") if f.is_file()),
                             a.image_folder, ()))
            for name, local_in, bucket_in, size, rows, extra in runs:
                local = _ingest(local_in, work / f"out-local-{name}", work / f"w-local-{name}", *extra)
                bucket = _ingest(bucket_in, work / f"out-bucket-{name}", work / f"w-bucket-{name}", *extra)
                out["inputs"][name] = {"bytes": size, "rows": rows, "local": local, "bucket": bucket}
                print(f"{name} ({size / 2**20:.0f} MiB, {rows:,} rows): local {local['wall_s']:.1f} s "
                      f"{local['peak_rss'] / 2**20:.0f} MiB; bucket {bucket['wall_s']:.1f} s "
                      f"{bucket['peak_rss'] / 2**20:.0f} MiB, copied {bucket['input_cache_bytes'] / 2**20:.0f} MiB; "
                      f"bucket/local {bucket['wall_s'] / local['wall_s']:.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from scale import write_results

    write_results(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
