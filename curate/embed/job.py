"""The embed job: downloaded image shards -> embeddings/<model_id>/ and embed_failures/<model_id>/.

One task per image shard (``images/NNNNNNNN.tar``; older datasets: ``images/NNNNN.tar``).
A task reads the shard's img2dataset results for its success rows (uid, key, caption), decodes and preprocesses the images in a
thread pool one batch ahead of the model, embeds images and captions, and writes
``embed_failures/<model_id>/part-NNNNN.parquet`` then ``embeddings/<model_id>/part-NNNNN.parquet``
(the completion marker), each atomically. A rerun skips shards whose embeddings part exists;
a killed task leaves only hidden temporary files.

The model is loaded once per worker process (``get_bundle``). Inside a Spark task that was
given a GPU (``spark.task.resource.gpu.amount=1``) the device is ``cuda:<its address>``, and
precision and batch size follow that GPU's properties (``curate.embed.devices``): an executor
with 8 GPUs runs 8 tasks, one per GPU.
``embed_shard`` needs neither Spark nor a dataset writer, so a GPU box without Spark can
benchmark and run it in a plain loop (``--engine local``).
"""

from __future__ import annotations

import os
import tarfile
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa

from curate import storage
from curate.download.job import IMAGES, complete_shards, shard_digits, shard_name
from curate.embed.core import default_threads
from curate.embed.devices import DevicePlan, task_device_plan
from curate.embed.shard import embed_shard, embeddings_table  # noqa: F401 - re-exported
from curate.embedding_space.vectors import write_vectors_parquet
from curate.errors import CurateError, DatasetError
from curate.tables import Dataset, write_parquet_atomic

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass
class EmbedOptions:
    model: str = "ViT-B-32"
    pretrained: str | None = None
    device: str = "auto"  # auto: the Spark task's GPU, else cuda if visible, else cpu
    precision: str = "auto"  # auto: bf16 autocast on the task's GPU if it has it, else fp16 autocast; fp32 on CPU
    batch_size: int = 0  # 0: by the task's GPU memory (256-2048, curate.embed.devices), 64 on CPU
    threads: int = 0  # decode threads per task; 0: min(8, cores)
    seed: int = 0  # random init when pretrained is None
    fast_decode: bool = False  # JPEG DCT-scaled decode (faster, pixels differ slightly)
    decode: str = "pil"  # pil (threads, Pillow) or tensor (torchvision batch decode on the model's device)
    limit_shards: int = 0  # 0: all


def _limit_cpu_threads() -> None:
    """Inside a Spark task, torch uses the task's cores, not every core of the executor
    (N concurrent tasks x all cores threads would thrash)."""
    import torch

    from curate.engine.spark import task_cpus

    try:
        cpus = task_cpus()
    except Exception:  # noqa: BLE001 - no Spark here
        cpus = None
    if cpus and torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)


def task_plan(opts: EmbedOptions) -> DevicePlan:
    """This task's device (its Spark GPU, if it was given one), precision and batch size."""
    return task_device_plan(opts.device, opts.precision, opts.batch_size)


_model_lock = threading.Lock()
_model_slot: dict = {}


def get_bundle(opts: EmbedOptions, plan: DevicePlan | None = None):
    """The model for ``opts`` on this task's device, loaded once per worker process.

    One embed model per process: a reused Python worker handed another GPU by a later task
    drops the model it held (and its cached CUDA blocks) before loading on the new device, so
    N workers x N GPUs never pile up N models per GPU.
    """
    from curate.models import load_model

    plan = plan or task_plan(opts)
    key = ("embed-model", opts.model, opts.pretrained, plan.device, plan.precision, opts.seed)
    with _model_lock:
        if _model_slot.get("key") != key:
            old = _model_slot.pop("bundle", None)
            _model_slot.pop("key", None)
            if old is not None and old.device.startswith("cuda"):
                import gc

                import torch

                del old
                gc.collect()
                torch.cuda.empty_cache()
            _model_slot["bundle"] = load_model(opts.model, opts.pretrained, device=plan.device,
                                               precision=plan.precision, seed=opts.seed)
            _model_slot["key"] = key
        return _model_slot["bundle"]


# ---------------------------------------------------------------- reading a shard
def shard_samples(root: Path | str, shard_id: int, digits: int | None = None) -> pa.Table:
    """The shard's success rows from img2dataset's results: uid, key, caption (``root`` a
    dataset path or URI)."""
    digits = digits or shard_digits(Dataset(root))
    path = storage.join(root, IMAGES, f"{shard_name(shard_id, digits)}.parquet")
    try:
        t = storage.read_parquet(path, columns=["uid", "key", "caption", "status"])
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise DatasetError(f"{path}: cannot read img2dataset shard results ({e})") from e
    import pyarrow.compute as pc

    return t.filter(pc.equal(t.column("status"), "success")).select(["uid", "key", "caption"])


def read_tar_images(tar_path: Path | str, keys: set[str]) -> dict[str, bytes]:
    """key -> encoded image bytes for the wanted keys (one sequential pass over the tar, a
    local file or an object streamed from the store)."""
    out: dict[str, bytes] = {}
    try:
        with storage.open_input_stream(tar_path) as src, tarfile.open(fileobj=src, mode="r|*") as tf:
            # streaming: no seeks, works on any file object (an object on a store too)
            for m in tf:
                if not m.isfile():
                    continue
                stem, _, ext = m.name.rpartition(".")
                if ext.lower() in IMAGE_EXTS and stem in keys:
                    out[stem] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"{tar_path}: cannot read image shard ({e})") from e
    return out


# ---------------------------------------------------------------- the task and the job
def table_names(model_id: str) -> tuple[str, str]:
    return f"embeddings/{model_id}", f"embed_failures/{model_id}"


def run_shard_task(task: dict) -> dict:
    """Executor task: embed image shard ``task['shard_id']`` unless its output exists."""
    ds = Dataset(task["root"])
    opts = EmbedOptions(**task["opts"])
    shard_id = task["shard_id"]
    emb_name, fail_name = table_names(task["model_id"])
    out = ds.shard_path(emb_name, shard_id)
    if storage.committed(out):
        return {"shard_id": shard_id, "skipped": True}
    plan = task_plan(opts)
    bundle = get_bundle(opts, plan)
    if not bundle.device.startswith("cuda"):
        _limit_cpu_threads()
    if bundle.model_id != task["model_id"]:
        raise CurateError(f"worker loaded {bundle.model_id}, driver planned {task['model_id']}: "
                          "the checkpoint must be the same file on every worker")
    digits = task.get("digits") or shard_digits(ds)
    rows = shard_samples(ds.root, shard_id, digits)
    shard = f"{IMAGES}/{shard_name(shard_id, digits)}.tar"
    keys = rows.column("key").to_pylist()
    images = read_tar_images(storage.join(ds.root, shard), set(keys))
    batch = plan.batch_size
    emb, fails, stats = embed_shard(bundle, rows.column("uid").to_pylist(), keys, rows.column("caption").to_pylist(),
                                    images, shard, batch, opts.threads or default_threads(),
                                    fast_decode=opts.fast_decode, decode=opts.decode)
    write_parquet_atomic(fails, ds.shard_path(fail_name, shard_id))
    write_vectors_parquet(emb, out)  # last: its existence marks the shard done; vectors PLAIN (fast decode)
    return {"shard_id": shard_id, "skipped": False, "device": bundle.device, "precision": bundle.precision,
            "batch_size": batch, "gpu": plan.gpu, **stats}


def check_embed(dataset: Dataset, opts: EmbedOptions) -> list:
    """The image shards to embed, after every check that needs no model and no engine (run
    before a JVM starts): options, the model name and weights, the dataset's shards."""
    from curate.models import PRECISIONS, check_model

    if opts.decode not in ("pil", "tensor"):
        raise CurateError(f"--decode must be pil or tensor, got {opts.decode!r}")
    if opts.precision not in (None, "", "auto", *PRECISIONS):
        raise CurateError(f"unknown precision {opts.precision!r}; use auto or one of {sorted(PRECISIONS)}")
    if opts.batch_size < 0 or opts.threads < 0 or opts.limit_shards < 0:
        raise CurateError("--batch-size, --threads and --limit-shards must be >= 0")
    shards = downloaded_shards(dataset)  # the dataset's state first: no model matters without images
    from curate.models.scorers import resolve_scorer

    scorer = resolve_scorer(opts.model, dataset.root) if opts.pretrained is None else None
    if scorer is not None:  # a trained scorer by name: its architecture and weights
        check_model(scorer.arch, str(scorer.checkpoint))
    else:
        check_model(opts.model, opts.pretrained)
    return shards


def downloaded_shards(dataset: Dataset) -> list:
    """The dataset's complete image shards; an error when there is no dataset or none."""
    if not dataset.exists():
        raise DatasetError(f"dataset folder {dataset.root} does not exist")
    shards = complete_shards(dataset)
    if not shards:
        raise DatasetError(f"{dataset.root} has no downloaded image shards; run `curate download` first")
    return shards


_SHARD = pa.schema([("shard", pa.string())])


def _downloaded_in(executor, dataset: Dataset, shards: pa.Array) -> int:
    """Successful downloads in the image shards ``shards``, counted by the engine's workers
    (the downloads table is a row per sample: never read on the driver)."""
    import pyarrow.compute as pc

    def ok(b: pa.RecordBatch) -> pa.Table:
        keep = pc.and_(pc.equal(b.column("status"), "success"), pc.is_in(b.column("shard"), value_set=shards))
        return pa.table([b.column("shard").filter(pc.fill_null(keep, False))], schema=_SHARD)

    rows = executor.frame_read([str(p) for p in dataset.shards("downloads")],
                               pa.schema([("status", pa.string()), ("shard", pa.string())]))
    return rows.map_batches(ok, _SHARD).count()


def _rows_in(dataset: Dataset, table: str, shards: list[int]) -> int:
    """Rows of ``table``'s parts for ``shards`` (from their footers)."""
    wanted = {storage.basename(dataset.shard_path(table, s)) for s in shards}
    return sum(storage.parquet_file(p).metadata.num_rows for p in dataset.shards(table)
               if storage.basename(p) in wanted)


def _absolute_paths(opts: EmbedOptions) -> EmbedOptions:
    """A local checkpoint file and a ``local-dir:`` folder as absolute paths: the run's manifest
    records them, and embedding again by the embeddings id (from another folder) reads them."""
    if opts.pretrained and not storage.is_uri(opts.pretrained) and os.path.isfile(opts.pretrained):
        opts = replace(opts, pretrained=os.path.abspath(opts.pretrained))
    if opts.model.startswith("local-dir:"):
        opts = replace(opts, model="local-dir:" + os.path.abspath(os.path.expanduser(opts.model[len("local-dir:"):])))
    return opts


def run_embed(dataset: Dataset, executor, opts: EmbedOptions) -> dict:
    """Embed every complete image shard of ``dataset``; returns counts (also in the run manifest)."""
    from curate.manifest import RunManifest
    from curate.models import model_id_for, register_configs
    from curate.models.scorers import resolve_scorer

    register_configs()
    shards = check_embed(dataset, opts)
    if opts.limit_shards:
        shards = shards[: opts.limit_shards]
    scorer = resolve_scorer(opts.model, dataset.root) if opts.pretrained is None else None
    if scorer is not None:  # a trained scorer by name (`curate scorer train`): its arch + weights
        opts = replace(opts, model=scorer.arch, pretrained=str(scorer.checkpoint))
    opts = _absolute_paths(opts)  # recorded so the embeddings id names the same file from anywhere
    model_id = model_id_for(opts.model, opts.pretrained, opts.seed)
    emb_name, fail_name = table_names(model_id)
    manifest = RunManifest("embed", {**asdict(opts), "model_id": model_id, "engine": getattr(executor, "name", "?"),
                                     "scorer": ({"name": scorer.name, "folder": str(scorer.folder)}
                                                if scorer is not None else None)})
    digits = shard_digits(dataset)
    tasks = [{"root": str(dataset.root), "shard_id": s, "digits": digits, "model_id": model_id, "opts": asdict(opts)}
             for s in shards]
    dataset.remove_temp_files(emb_name, fail_name)  # a killed run's half-written parts
    with manifest.stage("embed"):
        results = executor.map_tasks(tasks, run_shard_task, description=f"embed {model_id}")
    done = [r for r in results if not r["skipped"]]
    stats = {"model_id": model_id, **({"scorer": scorer.name} if scorer is not None else {}), "shards": len(shards),
             "shards_skipped": len(results) - len(done),
             # this run's shards only (--limit-shards after a whole run: the downloads below are theirs too)
             "embedded": _rows_in(dataset, emb_name, shards), "failed": _rows_in(dataset, fail_name, shards)}
    if dataset.has_table("downloads"):
        wanted = pa.array(sorted({f"{IMAGES}/{shard_name(s, digits)}.tar" for s in shards}), pa.string())
        success = _downloaded_in(executor, dataset, wanted)
        stats["downloads_success"] = success
        stats["unaccounted"] = success - stats["embedded"] - stats["failed"]
    secs = sum(r["seconds"] for r in done)
    if done:
        stats["images_per_second_per_task"] = round(sum(r["samples"] for r in done) / max(secs, 1e-9), 2)
        stats["device"] = done[0]["device"]
        stats["precision"] = done[0]["precision"]
        stats["devices"] = sorted({r["device"] for r in done})  # one per GPU when tasks ran on several
    manifest["counts"] = stats
    manifest["outputs"] = {"embeddings": emb_name, "failures": fail_name}
    manifest["tasks"] = results
    manifest.write(dataset, name=f"embed-{model_id}")
    return stats
