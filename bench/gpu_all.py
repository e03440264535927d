"""Every GPU figure curate's docs ask for, in one run that fits a short GPU loan (~8 min on one H100/H200).

    python bench/gpu_all.py --out gpu_bench.json            # a GPU box (writes JSON after each section)
    python bench/gpu_all.py --smoke --out /tmp/smoke.json   # tiny sizes on CPU: checks the script runs

Sections (each timed on its own; a failing section records its error and the rest still run;
``--budget-s`` skips what would start after the budget is spent):

  machine   GPU model(s), memory, driver, torch/CUDA, faiss (GPU or not), CPU cores
  embed     ViT-B-32 and ViT-L-14 (random init: throughput does not depend on the weights) in
            amp_bf16 and amp_fp16: model only (preprocessed tensors already on the GPU, image
            tower), and end to end from JPEG WebDataset shards (tar read, JPEG decode, resize,
            image + text towers, scores: curate's ``embed_shard``) with both decode paths
            (``pil``: Pillow in CPU threads; ``tensor``: nvJPEG batch decode on the GPU), GPU
            utilisation sampled with nvidia-smi during each end-to-end pass
  dedup     10M x 768 unit vectors (Gaussian mixture plus planted near copies, generated on the
            GPU): faiss k-means (spherical, GPU), nearest-centroid assignment (faiss GPU flat
            index), SemDeDup per cluster (torch on the GPU), through curate's library functions
  train     ``small`` (ViT-B-32, global batch 4096, DataComp's flags) on one GPU for --train-steps (150)
            steps over the JPEG shards: samples/s in open_clip's loop and end to end

The JPEG shards are generated (smooth random images, 512 px on the longer side like DataComp's
stored images), so nothing outside the machine is needed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


# ---------------------------------------------------------------- data
def smooth_jpeg(i: int, size: int) -> bytes:
    """A photo-like JPEG: low-frequency colour field plus mild grain (compresses like a photo)."""
    from PIL import Image

    rng = np.random.default_rng(i)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    h, w = (size * 3) // 4, size
    im = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    px = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(root: Path, n: int, per_shard: int, size: int, unique: int, threads: int) -> list[int]:
    """img2dataset-layout image shards (``images/<shard>.tar`` + its results Parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.download.job import IMAGES, shard_name

    with ThreadPoolExecutor(threads) as pool:
        jpegs = list(pool.map(lambda i: smooth_jpeg(i, size), range(min(unique, n))))
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, n, per_shard)):
        keys = [f"{shard_name(s)}{i:05d}" for i in range(min(per_shard, n - start))]
        texts = [f"a photo number {start + i} of people and animals outdoors" for i in range(len(keys))]
        with tarfile.open(root / IMAGES / f"{shard_name(s)}.tar", "w") as tf:
            for j, (k, t) in enumerate(zip(keys, texts)):
                for name, data in ((f"{k}.jpg", jpegs[(start + j) % len(jpegs)]), (f"{k}.txt", t.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        pq.write_table(pa.table({"uid": [f"{start + i:032x}" for i in range(len(keys))], "key": keys,
                                 "caption": texts, "status": ["success"] * len(keys)}),
                       root / IMAGES / f"{shard_name(s)}.parquet")
        shards.append(s)
    return shards


# ---------------------------------------------------------------- sections
def machine_info() -> dict:
    import torch

    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "loadavg_1m": os.getloadavg()[0], "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                 "capability": f"{p.major}.{p.minor}"})
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=10).stdout.split()[0]
        except Exception:  # noqa: BLE001 - no nvidia-smi: no driver figure
            info["driver"] = None
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        info["faiss"] = None
    return info


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def embed_section(a, work: Path, gpu: bool) -> dict:
    import torch

    from curate.download.job import IMAGES, shard_name
    from curate.embed.core import encode_image_tensor
    from curate.embed.devices import gpu_batch_size, task_device_plan
    from curate.embed.job import embed_shard, read_tar_images, shard_samples
    from curate.models import load_model
    from embed import GpuSampler  # bench/embed.py

    threads = a.threads or min(16, os.cpu_count() or 1)
    t = time.perf_counter()
    shards = write_shards(work / "shards", a.images, a.per_shard, a.stored_size, a.unique_images, threads)
    out: dict = {"images": a.images, "per_shard": a.per_shard, "stored_size": a.stored_size,
                 "decode_threads": threads, "setup_s": round(time.perf_counter() - t, 1), "runs": []}
    for model in a.models:
        for precision in a.precisions:
            plan = task_device_plan("auto", precision, a.batch_size)
            batch = a.batch_size or plan.batch_size
            run = {"model": model, "precision": precision, "device": plan.device, "batch_size": batch}
            bundle = load_model(model, device=plan.device, precision=precision)
            h, w = bundle.image_size
            # model only: the image tower on tensors already on the device
            x = torch.randn(batch, 3, h, w, device=bundle.device)
            encode_image_tensor(bundle, x[:8])
            encode_image_tensor(bundle, x)  # warm-up (cudnn autotune, allocator)
            _sync(bundle.device)
            reps = a.model_reps
            t = time.perf_counter()
            for _ in range(reps):
                encode_image_tensor(bundle, x)
            _sync(bundle.device)
            run["model_only_images_per_s"] = round(reps * batch / (time.perf_counter() - t), 1)
            del x
            # end to end over every shard, each decode path
            modes = a.decode or (["pil", "tensor"] if gpu else ["pil"])
            for mode in modes:
                total = 0
                with GpuSampler() as sampler:
                    t = time.perf_counter()
                    for s in shards:
                        rows = shard_samples(work / "shards", s)
                        keys = rows.column("key").to_pylist()
                        imgs = read_tar_images(work / "shards" / IMAGES / f"{shard_name(s)}.tar", set(keys))
                        emb, fails, _ = embed_shard(bundle, rows.column("uid").to_pylist(), keys,
                                                    rows.column("caption").to_pylist(), imgs,
                                                    f"{IMAGES}/{shard_name(s)}.tar", batch, threads, decode=mode)
                        assert fails.num_rows == 0, fails.slice(0, 3).to_pylist()
                        total += emb.num_rows
                    _sync(bundle.device)
                    dt = time.perf_counter() - t
                run[f"end_to_end_{mode}_images_per_s"] = round(total / dt, 1)
                run[f"gpu_utilisation_{mode}"] = sampler.summary() if gpu else None
            run["ratio_best_end_to_end_vs_model_only"] = round(
                max(v for k, v in run.items() if k.startswith("end_to_end")) / run["model_only_images_per_s"], 2)
            out["runs"].append(run)
            print(f"  embed {model} {precision}: {json.dumps({k: v for k, v in run.items() if k != 'model'})}",
                  flush=True)
            del bundle
            if gpu:
                torch.cuda.empty_cache()
    if gpu:
        out["batch_rule"] = f"gpu_batch_size -> {gpu_batch_size(_props())} on this GPU"
    return out


def _props():
    from curate.embed.devices import cuda_properties

    return cuda_properties(0)


def make_vectors(n: int, d: int, components: int, dup_frac: float, gpu: bool, seed: int = 0):
    """Unit float16 vectors from a Gaussian mixture, the last ``dup_frac`` being noisy copies
    (cosine ~0.997) of random earlier rows; generated on the GPU when there is one."""
    import torch

    dev = "cuda" if gpu else "cpu"
    g = torch.Generator(device=dev).manual_seed(seed)
    mu = torch.randn(components, d, device=dev, generator=g)
    x = np.empty((n, d), dtype=np.float16)
    ndup = int(n * dup_frac)
    step = 1 << 20
    for s in range(0, n - ndup, step):
        e = min(n - ndup, s + step)
        lab = torch.randint(0, components, (e - s,), device=dev, generator=g)
        z = mu[lab] + torch.randn(e - s, d, device=dev, generator=g)
        x[s:e] = torch.nn.functional.normalize(z, dim=1).half().cpu().numpy()
    src = torch.randint(0, n - ndup, (ndup,), generator=torch.Generator().manual_seed(seed + 1)).numpy()
    for s in range(0, ndup, step):
        e = min(ndup, s + step)
        z = torch.from_numpy(x[src[s:e]]).to(dev).float()
        z += torch.randn(z.shape, device=dev, generator=g) * (0.07 / np.sqrt(d))
        x[n - ndup + s:n - ndup + e] = torch.nn.functional.normalize(z, dim=1).half().cpu().numpy()
    return x


def dedup_section(a, gpu: bool) -> dict:
    from curate.embedding_space.kmeans import assign, faiss_num_gpus, train_kmeans
    from curate.embedding_space.semdedup import semdedup_cluster

    use_faiss_gpu = gpu and faiss_num_gpus() > 0
    out = {"n": a.n, "d": a.d, "k": a.k, "niter": a.niter, "points_per_centroid": a.ppc, "eps": a.eps,
           "faiss_gpu": use_faiss_gpu, "semdedup_device": "cuda" if gpu else "cpu"}
    t = time.perf_counter()
    x = make_vectors(a.n, a.d, a.components, a.dup_frac, gpu)
    uids = np.char.add("u", np.arange(a.n).astype("U12")).astype(object)
    out["generate_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(a.n, min(a.n, a.k * a.ppc), replace=False))
    c = train_kmeans(x[sample].astype(np.float32), a.k, niter=a.niter, seed=0, spherical=True,
                     max_points_per_centroid=a.ppc, gpu=use_faiss_gpu)
    out["kmeans_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    cid, cos = assign(x, c, metric="ip", batch_size=1 << 18, gpu=use_faiss_gpu)
    out["assign_s"] = round(time.perf_counter() - t, 2)
    out["assign_vectors_per_s"] = round(a.n / max(out["assign_s"], 1e-9))

    t = time.perf_counter()
    dist = (1.0 - np.clip(cos, -1, 1)).astype(np.float32)
    order = np.argsort(cid, kind="stable")
    bounds = np.searchsorted(cid[order], np.arange(a.k + 1))
    removed = 0
    for j in range(a.k):
        m = order[bounds[j]:bounds[j + 1]]
        if len(m) < 2:
            continue
        xm = x[m].astype(np.float32)
        xm /= np.linalg.norm(xm, axis=1, keepdims=True)
        kept = semdedup_cluster(xm, uids[m], dist[m], a.eps, device="auto" if gpu else "cpu")["kept"]
        removed += int((~kept).sum())
    out["semdedup_s"] = round(time.perf_counter() - t, 2)
    out["semdedup_removed"] = removed
    out["planted_near_copies"] = int(a.n * a.dup_frac)
    out["largest_cluster"] = int(np.diff(bounds).max())
    out["total_s"] = round(out["kmeans_s"] + out["assign_s"] + out["semdedup_s"], 2)
    return out


def train_section(a, work: Path, gpu: bool) -> dict:
    from curate.download.job import IMAGES
    from curate.train import Launch, get_preset, train

    tars = sorted(str(p) for p in (work / "shards" / IMAGES).glob("*.tar"))
    if not tars:  # the embed section was skipped: shards of our own
        write_shards(work / "shards", a.images, a.per_shard, a.stored_size, a.unique_images,
                     a.threads or min(16, os.cpu_count() or 1))
        tars = sorted(str(p) for p in (work / "shards" / IMAGES).glob("*.tar"))
    preset = get_preset(a.train_preset)
    batch = a.train_batch or preset.batch_size
    t = time.perf_counter()
    info = train(tars, work / "train", a.train_preset, samples_seen=a.train_steps * batch, batch_size=batch,
                 checkpoints=1, workers=a.train_workers if gpu else 0, device="cuda" if gpu else "cpu",
                 precision="amp" if gpu else "fp32", overwrite=True,
                 launch=Launch(nproc_per_node=a.train_gpus) if a.train_gpus > 1 else None)
    return {"preset": a.train_preset, "model": info["model"], "global_batch": info["global_batch"],
            "steps": info["steps"], "samples_seen": info["samples_seen"], "world_size": info["world_size"],
            "workers": a.train_workers if gpu else 0, "precision": info["precision"],
            "loop_samples_per_s": info["train_samples_per_s"],
            "per_rank_samples_per_s": [r["samples_per_s"] for r in info["ranks"]],
            "end_to_end_samples_per_s": info["samples_per_s"], "wall_s": round(time.perf_counter() - t, 1),
            "loss_first": info["loss_first"], "loss_last": info["loss_last"],
            "flags": [f for f in info["argv"] if f in ("--grad-checkpointing", "--local-loss", "--gather-with-grad")]}


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check that every section runs)")
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--sections", default="embed,dedup,train")
    ap.add_argument("--budget-s", type=float, default=480, help="skip sections that would start after this")
    ap.add_argument("--workdir", default=None)
    g = ap.add_argument_group("embed")
    g.add_argument("--models", default="ViT-B-32,ViT-L-14")
    g.add_argument("--precisions", default="amp_bf16,amp_fp16")
    g.add_argument("--decode", default="", help="pil,tensor (default both on GPU, pil on CPU)")
    g.add_argument("--images", type=int, default=20_000)
    g.add_argument("--per-shard", type=int, default=5_000)
    g.add_argument("--unique-images", type=int, default=2_000, help="distinct JPEGs (the rest repeat their bytes)")
    g.add_argument("--stored-size", type=int, default=512)
    g.add_argument("--batch-size", type=int, default=0, help="0: by the GPU's memory (curate.embed.devices)")
    g.add_argument("--model-reps", type=int, default=20)
    g.add_argument("--threads", type=int, default=0, help="decode threads (0: min(16, cores))")
    g = ap.add_argument_group("dedup")
    g.add_argument("--n", type=int, default=10_000_000)
    g.add_argument("--d", type=int, default=768)
    g.add_argument("--k", type=int, default=2_236, help="clusters (about sqrt(n/2))")
    g.add_argument("--components", type=int, default=4_000)
    g.add_argument("--dup-frac", type=float, default=0.1)
    g.add_argument("--niter", type=int, default=20)
    g.add_argument("--ppc", type=int, default=64)
    g.add_argument("--eps", type=float, default=0.01)
    g = ap.add_argument_group("train")
    g.add_argument("--train-preset", default="small")
    g.add_argument("--train-steps", type=int, default=150, help="steps of the global batch (data decode bounds them on one node)")
    g.add_argument("--train-batch", type=int, default=0, help="0: the preset's global batch")
    g.add_argument("--train-workers", type=int, default=0, help="data loader processes (0: min(16, cores))")
    g.add_argument("--train-gpus", type=int, default=1)
    a = ap.parse_args(argv)
    if a.smoke:
        a.models, a.precisions = "curate-tiny", "fp32"
        a.images, a.per_shard, a.unique_images, a.stored_size, a.model_reps = 48, 24, 8, 128, 2
        a.n, a.d, a.k, a.components, a.niter, a.ppc = 20_000, 64, 20, 40, 5, 64
        a.train_preset, a.train_steps, a.train_batch = "tiny", 4, 16
    a.models = [m for m in a.models.split(",") if m]
    a.precisions = [p for p in a.precisions.split(",") if p]
    a.decode = [d for d in a.decode.split(",") if d]
    a.train_workers = a.train_workers or min(16, os.cpu_count() or 1)

    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not a.smoke:
        print("no GPU visible: running anyway, but these are CPU figures (use --smoke for a quick check)")
    result = {"smoke": a.smoke, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine_info(), "sections": {}}
    out = Path(a.out)

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    save()
    print(json.dumps(result["machine"]), flush=True)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="curate-gpu-bench-"))
    t_start = time.perf_counter()
    sections = {"embed": lambda: embed_section(a, work, gpu), "dedup": lambda: dedup_section(a, gpu),
                "train": lambda: train_section(a, work, gpu)}
    ok = True
    try:
        for name in [s for s in a.sections.split(",") if s]:
            spent = time.perf_counter() - t_start
            if spent > a.budget_s:
                result["sections"][name] = {"skipped": f"budget of {a.budget_s:.0f} s spent ({spent:.0f} s)"}
                save()
                continue
            print(f"[{name}] ...", flush=True)
            t = time.perf_counter()
            try:
                result["sections"][name] = {**sections[name](), "section_s": round(time.perf_counter() - t, 1)}
            except Exception as e:  # noqa: BLE001 - one failing section must not lose the others' figures
                ok = False
                result["sections"][name] = {"error": f"{type(e).__name__}: {e}",
                                            "traceback": traceback.format_exc()[-4000:]}
            print(f"[{name}] {json.dumps(result['sections'][name], default=str)[:2000]}", flush=True)
            save()
    finally:
        result["total_s"] = round(time.perf_counter() - t_start, 1)
        save()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} ({result['total_s']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
