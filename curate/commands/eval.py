"""``curate eval``: zero-shot classification and image-text retrieval of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import StorageOpt, use_storage_options


def _retrieval_copy(path: str) -> str:
    """A retrieval set (folder, or its captions csv) as a local path; a csv on a store brings its folder."""
    from curate import storage

    if storage.is_uri(path) and storage.is_file(path):
        return str(Path(storage.local_copy(path.rsplit("/", 1)[0])) / storage.basename(path))
    return storage.local_copy(path)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        checkpoint: Optional[Path] = typer.Argument(
            None, help="Checkpoint (a run's model.pt or checkpoints/epoch_k.pt) or a run folder; omit with --model for random weights."),
        model: Optional[str] = typer.Option(None, "--model", help="Architecture (default: from the run's train.json); "
                                            "also NAME:TAG, a checkpoint file, or an embeddings id such as "
                                            "curate-tiny__random-seed0."),
        zeroshot: list[str] = typer.Option([], "--zeroshot", "-z", help="Labelled image folder FOLDER/<class>/*.jpg "
                                                                         "(a path or URI: s3://bucket/evals/cifar); repeatable."),
        retrieval: list[str] = typer.Option([], "--retrieval", "-r", help="Image-caption set: a folder with "
                                                                          "captions.csv (image,caption) and images/, "
                                                                          "or the csv (a path or URI); repeatable."),
        templates: Optional[str] = typer.Option(None, "--templates", help="default, openai, simple or a file "
                                                                          "with one {} template per line."),
        max_per_class: Optional[int] = typer.Option(None, "--max-per-class", help="Zero-shot: first N images per class."),
        images: Optional[str] = typer.Option(None, "--images", help="Retrieval: a file listing the image names "
                                                                     "to use (a held-out split; a path or URI)."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Results JSON, a path or URI (default "
                                                                           "<checkpoint stem>.eval.json beside it)."),
        device: str = typer.Option("auto", "--device"),
        batch_size: int = typer.Option(256, "--batch-size"),
        seed: int = typer.Option(0, "--seed", help="Seed of the random weights when no checkpoint is given."),
        storage_option: list[str] = StorageOpt,
    ) -> None:
        """Evaluate a checkpoint; results JSON beside it, linked from the trained subset's manifest."""
        from curate.evaluate import evaluate
        from curate.models.resolve import resolve_model

        tag = None
        if model is not None:  # the one model resolver: NAME, NAME:TAG, a checkpoint, an embeddings id
            ref = resolve_model(model, None, seed)
            model, seed = ref.name, ref.seed
            if ref.pretrained and Path(ref.pretrained).is_file() and checkpoint is None:
                checkpoint = Path(ref.pretrained)
            elif ref.pretrained:
                tag = ref.pretrained
        from curate import storage

        use_storage_options(storage_option)
        from curate.commands._common import require_local

        for p in [*([str(checkpoint)] if checkpoint else [])]:
            require_local(p, "path")
        for p in [*zeroshot, *retrieval, *([images] if images else [])]:
            if not storage.exists(p):
                from curate.errors import CurateError

                raise CurateError(f"{p} does not exist")
        # evaluation sets are small: one on a store is copied to the local input cache first
        copies = {p: storage.local_copy(p) for p in zeroshot}
        copies.update({p: _retrieval_copy(p) for p in retrieval})
        sources = {v: k for k, v in copies.items() if v != k}
        zeroshot = [Path(copies[p]) for p in zeroshot]
        retrieval = [Path(copies[p]) for p in retrieval]
        names = None
        if images is not None:
            names = [ln.strip() for ln in storage.read_bytes(images).decode().splitlines() if ln.strip()]
        res = evaluate(checkpoint, model, zeroshot=zeroshot, retrieval_sets=retrieval, templates=templates,
                       max_per_class=max_per_class, retrieval_images=names, output=output, device=device,
                       batch_size=batch_size, seed=seed, pretrained=tag, sources=sources)
        typer.echo(json.dumps(res["summary"], indent=1, sort_keys=True))
        typer.echo(f"eval: results in {res['results_path']}")
