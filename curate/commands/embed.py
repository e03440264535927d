"""`curate embed`: open_clip image and text embeddings and CLIP scores for downloaded samples."""

from __future__ import annotations

import json
from typing import Optional

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.embed import EmbedParams


def embed(run: JobRun, p: EmbedParams) -> None:
    from curate.embed.job import check_embed, downloaded_shards, run_embed
    from curate.models.resolve import resolve_model
    from curate.models.scorers import resolve_scorer
    from curate.progress import info

    ds = run.ds
    downloaded_shards(ds)  # before the model is looked up: a dataset with no images says so first
    if p.pretrained is None and resolve_scorer(p.model, ds.root) is not None:
        opts = p.options(p.model, None, p.seed)  # run_embed records the scorer by name
    else:
        ref = resolve_model(p.model, p.pretrained, p.seed, dataset=ds)
        opts = p.options(ref.name, ref.pretrained, ref.seed)
    check_embed(ds, opts)
    stats = run_embed(ds, run.executor(), opts)
    info(f"embed {stats['model_id']}: {stats['embedded']} embedded, {stats['failed']} failed, "
         f"{stats['shards_skipped']} of {stats['shards']} shards already done")
    n = stats.get("unaccounted")
    if n and n > 0:
        info(f"warning: {n:,} downloaded samples have neither an embedding nor a failure row")
    elif n:  # images of samples an ingest with other inputs replaced are still in the tars
        info(f"warning: {-n:,} more embedding and failure rows than downloaded samples: the images/ tars hold "
             f"samples that are no longer in the pool (an ingest with other inputs replaced it); jobs reading "
             f"{stats['model_id']} by its rows (a clip_score fraction) count them too. Ingest every input together "
             f"into a new dataset to start clean")
    info(json.dumps({k: v for k, v in stats.items() if k not in ('model_id',)}))


def register(app: typer.Typer) -> None:
    app.command("embed")(job_command(
        EmbedParams, embed, app_name="curate-embed",
        common=Common(None, dataset_help="Dataset folder or URI (s3://bucket/ds) with downloaded image shards "
                      "(`curate download`).", subset=False, output=False, storage=True),
        help="Write DATASET/embeddings/<model_id>/ (uid, image/text embeddings as float16, clip_score) and "
        "DATASET/embed_failures/<model_id>/ for images that cannot be decoded.\n\n"
        "One task per image shard; reruns skip finished shards. On a GPU cluster give each task a GPU: --conf "
        "spark.executor.resource.gpu.amount=N --conf spark.task.resource.gpu.amount=1 (one task per GPU) (plus the "
        "cluster's GPU discovery script)."))

    @app.command("models")
    def models(name: Optional[str] = typer.Argument(None, help="Show this model's pretrained tags and config.", metavar="NAME")):
        """List open_clip model names (curate's small configs included), or one model's tags."""
        import open_clip

        from curate.models import list_models, list_pretrained_tags, register_configs

        ours = set(register_configs())
        if name is None:
            for m in list_models():
                print(f"{m}{'  (curate)' if m in ours else ''}")
            return
        from curate.models.factory import check_model

        check_model(name, None)  # an unknown name: one line with the near ones
        cfg = open_clip.get_model_config(name)
        print(json.dumps({"model": name, "pretrained_tags": list_pretrained_tags(name), "config": cfg}, indent=2))
