"""An image folder read by one ingest task against the same folder cut into tasks.

``--images`` JPEGs (``--size`` px of noise, each with a sidecar caption, in subfolders of 1,000)
and, in a second folder, the same images with one captions file, are ingested on Spark local
mode (``--master``, default local[2]) twice each in this process: once with the whole folder one
task (``IMAGE_TASK_ROWS`` above the folder's rows: how every image folder was read before
session 20) and once cut into tasks of ``--task-rows`` rows (the default is
``curate.ingest.plan.IMAGE_TASK_ROWS``), alternating ``--repeats`` times. Printed per folder and
way: wall time of the ingest (the session is started before, so its start is not counted), its
tasks, and the ratio cut / one task. The tables written are checked equal.

With ``--store``, the captions folder is also put in a bucket of moto's standalone S3 server on
127.0.0.1 and ingested from there (``s3://bench/caps``, read in place: a ranged GET an image):
the case the cut is for, where each image costs a request.

    python bench/ingest_image_folder.py --images 40000 --task-rows 10000 [--store] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_folders(root: Path, images: int, size: int) -> tuple[Path, Path]:
    from PIL import Image

    side, caps = root / "side", root / "caps"
    rng = random.Random(0)
    lines = ["image,caption"]
    for i in range(images):
        rel = f"{i // 1000:04d}/{i:07d}.jpg"
        for folder in (side, caps):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        im = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
        im.save(side / rel, quality=80)
        shutil.copyfile(side / rel, caps / rel)
        caption = f"a photo number {i} of a thing in a place"
        (side / rel).with_suffix(".txt").write_text(caption)
        lines.append(f"{rel},{caption}")
    (caps / "captions.csv").write_text("\n".join(lines) + "\n")
    return side, caps


def _name(folder) -> str:
    return f"{Path(folder).name}-s3" if str(folder).startswith("s3://") else Path(folder).name


def table_digest(root: Path) -> str:
    h = hashlib.sha256()
    for t in ("samples", "rejects", "duplicates"):
        for p in sorted((root / t).glob("*.parquet")):
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    import curate.ingest.plan as plan

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--task-rows", type=int, default=plan.IMAGE_TASK_ROWS)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--store", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()

    from curate.engine.spark import SparkExecutor
    from curate.engine.spark_session import get_session
    from curate.ingest.job import run_ingest

    work = Path(tempfile.mkdtemp(prefix="curate-bench-imgfolder-"))
    try:
        t0 = time.perf_counter()
        folders = make_folders(work, a.images, a.size)
        print(f"made {a.images:,} images x 2 folders in {time.perf_counter() - t0:.1f} s", flush=True)
        store = None
        if a.store:
            import contextlib
            import os

            sys.path.insert(0, str(REPO / "tests" / "storage"))
            from s3kit import S3_ENV, moto_server

            store = contextlib.ExitStack()
            (work / "moto").mkdir()
            url = store.enter_context(moto_server(work / "moto"))
            os.environ.update({"AWS_ENDPOINT_URL": url, **S3_ENV})
            import boto3
            from concurrent.futures import ThreadPoolExecutor

            s3 = boto3.client("s3", endpoint_url=url)
            s3.create_bucket(Bucket="bench")
            files = [f for f in folders[1].rglob("*") if f.is_file()]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                def put(f: Path) -> None:
                    key = f"caps/{f.relative_to(folders[1]).as_posix()}"
                    s3.put_object(Bucket="bench", Key=key, Body=f.read_bytes())

                list(pool.map(put, files))
            print(f"uploaded {len(files):,} objects in {time.perf_counter() - t0:.1f} s", flush=True)
            folders = (*folders, "s3://bench/caps")
        spark = get_session(master=a.master)
        results = {}
        for folder in folders:
            for rep in range(a.repeats):
                for way, rows in (("one task", 10 ** 12), ("cut", a.task_rows)):
                    plan.IMAGE_TASK_ROWS = rows
                    name = _name(folder)
                    out = work / f"out-{name}-{way.replace(' ', '-')}-{rep}"
                    cfg = plan.IngestConfig(inputs=[str(folder)], output=str(out),
                                            store_folders=plan.find_image_folders([str(folder)], None))
                    t = time.perf_counter()
                    m = run_ingest(SparkExecutor(spark), cfg)
                    wall = time.perf_counter() - t
                    r = results.setdefault(f"{name}/{way}", {"wall_s": [], "tasks": None, "digest": None})
                    r["wall_s"].append(round(wall, 2))
                    r["tasks"] = len(plan.plan_tasks(cfg)[0])
                    r["digest"] = table_digest(out)
                    print(f"{name:7s} {way:9s} run {rep}: {wall:6.1f} s  {r['tasks']} tasks  "
                          f"{m['counts']['kept']:,} kept", flush=True)
                    shutil.rmtree(out)
        for folder in folders:
            name = _name(folder)
            one, cut = results[f"{name}/one task"], results[f"{name}/cut"]
            assert one["digest"] == cut["digest"], f"{name}: the tables differ"
            ratio = min(cut["wall_s"]) / min(one["wall_s"])
            results[f"{name}/ratio cut / one task (best of each)"] = round(ratio, 3)
            print(f"{name}: one task best {min(one['wall_s']):.1f} s, cut ({cut['tasks']} tasks) best "
                  f"{min(cut['wall_s']):.1f} s: {ratio:.2f}x")
        results["params"] = vars(a)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
        if store is not None:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
