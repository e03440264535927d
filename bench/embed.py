"""Embedding throughput: images per second, model only and end to end from JPEG shards.

    python bench/embed.py                       # ViT-B-32 at 224 px on whatever device there is
    python bench/embed.py --images 20000 --batch-size 1024 --threads 14   # a GPU box

Measures, in one process and on one device:
  model_only   encode_image on preprocessed tensors already in memory (the ceiling)
  sequential   decode + preprocess + model one batch after another (the baseline: no overlap)
  decode_*     decode + preprocess only: Pillow in threads (full and --fast-decode), and the
               torchvision batch decode on the model's device (nvJPEG on CUDA)
  end_to_end   curate's embed_shard over img2dataset WebDataset shards: tar read, threaded
               decode/preprocess one batch ahead of the model, image + text embedding, scores
               (on GPU both decode paths: pil and tensor)
and prints JSON with images/s and the ratios end_to_end / sequential and end_to_end / model_only.
On CUDA it also samples GPU utilisation (nvidia-smi) during the end-to-end run.

The shards hold flickr8k photos (../shared/data) re-encoded at --stored-size px on the longer
side (DataComp stores images at up to 512 px), written by the real download job from file:// URLs.
Random weights: throughput does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_dataset(root: Path, n: int, stored_size: int, per_shard: int):
    import pyarrow as pa
    from PIL import Image

    from curate.download import DownloadOptions, FetchPolicy, run_download
    from curate.engine import LocalExecutor
    from curate.tables import Dataset
    from curate.uid import derive_uid

    photos = sorted((SHARED / "flickr8k" / "images").glob("*.jpg"))
    if not photos:
        sys.exit(f"no photos under {SHARED}/flickr8k/images")
    src = root / "src"
    src.mkdir(parents=True)
    urls = []
    for i in range(n):
        p = src / f"{i:07d}.jpg"
        if i < len(photos) * 1:
            im = Image.open(photos[i % len(photos)]).convert("RGB")
            scale = stored_size / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
            im.save(p, quality=90)
        else:  # reuse the bytes of an earlier one (same decode cost, less setup time)
            shutil.copyfile(src / f"{i % len(photos):07d}.jpg", p)
        urls.append(p.as_uri())
    texts = [f"a photo number {i} of people and animals outdoors" for i in range(n)]
    ds = Dataset(root / "ds")
    ds.write_table("samples", pa.table({
        "uid": [derive_uid(u, t) for u, t in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["bench"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array([None] * n, pa.int32()), "original_height": pa.array([None] * n, pa.int32()),
        "extra": pa.array([None] * n, pa.string())}), schema="samples")
    opts = DownloadOptions(samples_per_shard=per_shard, thread_count=16, resize_mode="no",
                           policy=FetchPolicy(allow_file_urls=True))
    stats = run_download(ds, LocalExecutor(), opts)
    assert stats["success"] == n, stats
    return ds


class GpuSampler:
    """Polls nvidia-smi for utilisation while running (CUDA only)."""

    def __init__(self, index: int = 0):
        self.index, self.samples, self._stop = index, [], threading.Event()

    def _run(self):
        while not self._stop.wait(0.2):
            try:
                out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except Exception:  # noqa: BLE001 - no nvidia-smi: no figure
                return

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=6)

    def summary(self):
        if not self.samples:
            return None
        s = np.array(self.samples)
        return {"mean_pct": round(float(s.mean()), 1), "median_pct": float(np.median(s)), "samples": len(s)}


def sync(bundle):
    import torch

    if bundle.device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--images", type=int, default=0, help="images in the shards (default 192 on CPU, 20000 on GPU)")
    ap.add_argument("--per-shard", type=int, default=0, help="images per shard (default images/4)")
    ap.add_argument("--batch-size", type=int, default=0, help="default 32 on CPU, 1024 on GPU")
    ap.add_argument("--threads", type=int, default=0, help="decode threads (default min(16, cores))")
    ap.add_argument("--stored-size", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--fast-decode", action="store_true", help="end to end with JPEG DCT-scaled decoding")
    ap.add_argument("--decode", default="", help="pil or tensor for end to end (default: both on GPU, pil on CPU)")
    args = ap.parse_args()

    import torch

    from curate.embed.core import ImagePipeline, TensorJpegPipeline, encode_image_tensor, encode_text_tokens, open_image, prepared_batches
    from curate.embed.job import embed_shard, read_tar_images, shard_samples
    from curate.download import complete_shards
    from curate.download.job import shard_digits, shard_name
    from curate.models import load_model

    bundle = load_model(args.model, device=args.device, precision=args.precision)
    gpu = bundle.device.startswith("cuda")
    n = args.images or (20000 if gpu else 192)
    batch = args.batch_size or (1024 if gpu else 32)
    threads = args.threads or min(16, os.cpu_count() or 1)
    per_shard = args.per_shard or max(1, n // 4)
    if gpu:
        torch.backends.cudnn.benchmark = True
    h, w = bundle.image_size
    result = {
        "model": args.model, "image_size": [h, w], "device": bundle.device, "precision": bundle.precision,
        "batch_size": batch, "decode_threads": threads, "fast_decode": args.fast_decode, "images": n, "stored_size": args.stored_size,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "loadavg_1m": os.getloadavg()[0]},
    }

    work = Path(args.workdir or tempfile.mkdtemp(prefix="curate-bench-embed-"))
    try:
        t = time.perf_counter()
        ds = make_dataset(work, n, args.stored_size, per_shard)
        result["setup_seconds"] = round(time.perf_counter() - t, 1)
        shards = complete_shards(ds)
        digits = shard_digits(ds)

        # model only: preprocessed tensors in memory
        x = torch.randn(batch, 3, h, w)
        encode_image_tensor(bundle, x[: min(batch, 8)])  # warm-up (cudnn autotune, allocator)
        reps = max(3, min(50, (n // batch) or 1))
        sync(bundle)
        t = time.perf_counter()
        for _ in range(reps):
            encode_image_tensor(bundle, x)
        sync(bundle)
        result["model_only_images_per_s"] = round(reps * batch / (time.perf_counter() - t), 1)

        # sequential baseline: read, decode, preprocess, then model, no overlap
        rows = shard_samples(ds.root, shards[0])
        keys = rows.column("key").to_pylist()
        images = read_tar_images(ds.root / "images" / f"{shard_name(shards[0], digits)}.tar", set(keys))
        texts = rows.column("caption").to_pylist()
        m = min(len(keys), batch * 2)
        t = time.perf_counter()
        for s in range(0, m, batch):
            ks = keys[s:s + batch]
            px = torch.stack([bundle.preprocess(open_image(images[k])) for k in ks])
            encode_image_tensor(bundle, px)
            encode_text_tokens(bundle, bundle.tokenizer(texts[s:s + batch]))
        sync(bundle)
        result["sequential_images_per_s"] = round(m / (time.perf_counter() - t), 1)

        # decode + preprocess only (the CPU side of the pipeline), threads, full and fast decode
        items = [images[k] for k in keys]
        for label, fast in (("decode_preprocess_images_per_s", False), ("decode_preprocess_fast_decode_images_per_s", True)):
            pipe = ImagePipeline(bundle, fast_decode=fast)
            t = time.perf_counter()
            for _, prepared in prepared_batches(items, lambda d: pipe.prepare(pipe.open(d)), batch, threads):
                assert not any(isinstance(p, Exception) for p in prepared)
            rate = len(items) / (time.perf_counter() - t)
            result[label] = round(rate, 1)
            result[label.replace("_images_per_s", "_per_thread")] = round(rate / threads, 1)

        tpipe = TensorJpegPipeline(bundle)
        t = time.perf_counter()
        for s0 in range(0, len(items), batch):
            chunk = items[s0:s0 + batch]
            out, errs = tpipe.batch([tpipe.prepare(d) for d in chunk], chunk, [""] * len(chunk))
            assert not any(errs)
        sync(bundle)
        result["decode_preprocess_tensor_images_per_s"] = round(len(items) / (time.perf_counter() - t), 1)

        # end to end over every shard: curate's per-shard function in a plain loop (no Spark)
        modes = [args.decode] if args.decode else (["pil", "tensor"] if gpu else ["pil"])
        for mode in modes:
            total = 0
            with GpuSampler() as sampler:
                t = time.perf_counter()
                for s in shards:
                    rows = shard_samples(ds.root, s)
                    keys = rows.column("key").to_pylist()
                    imgs = read_tar_images(ds.root / "images" / f"{shard_name(s, digits)}.tar", set(keys))
                    emb, fails, st = embed_shard(bundle, rows.column("uid").to_pylist(), keys,
                                                 rows.column("caption").to_pylist(), imgs, f"images/{shard_name(s, digits)}.tar",
                                                 batch, threads, fast_decode=args.fast_decode, decode=mode)
                    assert fails.num_rows == 0
                    total += emb.num_rows
                sync(bundle)
                dt = time.perf_counter() - t
            suffix = "" if mode == "pil" else "_tensor_decode"
            result[f"end_to_end{suffix}_images_per_s"] = round(total / dt, 1)
            result[f"gpu_utilisation{suffix}"] = sampler.summary() if gpu else None
        result["end_to_end_images"] = total
        best = max(v for k, v in result.items() if k.startswith("end_to_end") and k.endswith("images_per_s"))
        result["ratio_end_to_end_vs_sequential"] = round(best / result["sequential_images_per_s"], 2)
        result["ratio_end_to_end_vs_model_only"] = round(best / result["model_only_images_per_s"], 2)
        if not gpu:
            result["note"] = "CPU run; GPU figures were not measured on this machine"
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
