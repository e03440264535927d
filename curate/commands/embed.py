"""`curate embed`: open_clip image and text embeddings and CLIP scores for downloaded samples."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor, use_storage_options
from curate.lock import hold_dataset_lock


# Over 60 lines only as the holder of two commands (embed, models), each a signature of options and a short body.
def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        dataset: str = typer.Argument(..., help="Dataset folder or URI (s3://bucket/ds) with downloaded image shards (`curate download`)."),
        model: str = typer.Option("ViT-B-32", "--model", "-m", help="open_clip model name (`curate models` lists them; curate-tiny and curate-small are built in), NAME:TAG, a checkpoint file, an embeddings table id (embed again with the same model), or a scorer: its name in DATASET/scorers/ or its folder (`curate scorer train`)."),
        pretrained: Optional[str] = typer.Option(None, "--pretrained", "-p", help="open_clip pretrained tag (e.g. laion2b_s34b_b79k) or a local checkpoint file. Without it: random weights from --seed."),
        device: str = typer.Option("auto", "--device", help="auto (the Spark task's GPU, else cuda if visible, else cpu), cpu, cuda, cuda:N."),
        precision: str = typer.Option("auto", "--precision", help="auto, fp32, amp_bf16, amp_fp16, bf16, fp16."),
        batch_size: int = typer.Option(0, "--batch-size", help="Images per forward pass (0: by the GPU's memory, 256-2048; 64 on CPU)."),
        threads: int = typer.Option(0, "--threads", help="JPEG decode threads per task (0: min(8, cores))."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random weights when no --pretrained is given."),
        limit_shards: int = typer.Option(0, "--limit-shards", help="Embed only the first N image shards (0: all)."),
        decode: str = typer.Option("pil", "--decode", help="pil: Pillow in CPU threads (open_clip's own transform); tensor: torchvision batch JPEG decode + resize on the model's device (nvJPEG on CUDA), for GPUs that the CPU cannot feed."),
        fast_decode: bool = typer.Option(False, "--fast-decode", help="Decode large JPEGs at 1/2-1/8 scale (libjpeg DCT scaling, never below the model's input size): several times less decode work, slightly different pixels."),
        master: Optional[str] = MasterOpt,
        conf: List[str] = ConfOpt,
        engine: str = EngineOpt,
        storage_option: List[str] = StorageOpt,
    ):
        """Write DATASET/embeddings/<model_id>/ (uid, image/text embeddings as float16, clip_score)
        and DATASET/embed_failures/<model_id>/ for images that cannot be decoded.

        One task per image shard; reruns skip finished shards. On a GPU cluster give each task a
        GPU: --conf spark.executor.resource.gpu.amount=N --conf spark.task.resource.gpu.amount=1 (one task per GPU)
        (plus the cluster's GPU discovery script).
        """
        from curate.embed.job import EmbedOptions, check_embed, run_embed
        from curate.models.resolve import resolve_model
        from curate.progress import info
        from curate.tables import Dataset

        use_storage_options(storage_option)
        hold_dataset_lock(dataset)  # one writer per dataset
        ds = Dataset(dataset)
        from curate.models.scorers import resolve_scorer

        if pretrained is None and resolve_scorer(model, ds.root) is not None:
            name, weights = model, None  # run_embed records the scorer by name
        else:
            ref = resolve_model(model, pretrained, seed, dataset=ds)
            name, weights, seed = ref.name, ref.pretrained, ref.seed
        opts = EmbedOptions(model=name, pretrained=weights, device=device, precision=precision,
                            batch_size=batch_size, threads=threads, seed=seed, limit_shards=limit_shards,
                            fast_decode=fast_decode, decode=decode)
        check_embed(ds, opts)
        executor = open_executor(engine, master, conf, "curate-embed", dataset=dataset)
        stats = run_embed(ds, executor, opts)
        info(f"embed {stats['model_id']}: {stats['embedded']} embedded, {stats['failed']} failed, "
             f"{stats['shards_skipped']} of {stats['shards']} shards already done")
        if stats.get("unaccounted"):
            info(f"warning: {stats['unaccounted']} downloaded samples have neither an embedding nor a failure row")
        info(json.dumps({k: v for k, v in stats.items() if k not in ('model_id',)}))

    @app.command("models")
    def models(name: Optional[str] = typer.Argument(None, help="Show this model's pretrained tags and config.")):
        """List open_clip model names (curate's small configs included), or one model's tags."""
        import open_clip

        from curate.models import list_models, list_pretrained_tags, register_configs

        ours = set(register_configs())
        if name is None:
            for m in list_models():
                print(f"{m}{'  (curate)' if m in ours else ''}")
            return
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            from curate.errors import CurateError

            raise CurateError(f"unknown model {name!r}; `curate models` lists them")
        print(json.dumps({"model": name, "pretrained_tags": list_pretrained_tags(name), "config": cfg}, indent=2))
