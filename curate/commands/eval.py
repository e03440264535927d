"""``curate eval``: zero-shot classification and image-text retrieval of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.evaluate import EvalParams


def _retrieval_copy(path: str) -> str:
    """A retrieval set (folder, or its captions csv) as a local path; a csv on a store brings its folder."""
    from curate import storage

    if storage.is_uri(path) and storage.is_file(path):
        return str(Path(storage.local_copy(path.rsplit("/", 1)[0])) / storage.basename(path))
    return storage.local_copy(path)


def _resolve(p: EvalParams, checkpoint: Optional[Path]) -> tuple[Optional[Path], Optional[str], int, Optional[str]]:
    """(checkpoint, architecture, seed, pretrained tag) by the one model resolver: --model may be
    NAME, NAME:TAG, a checkpoint file or an embeddings id."""
    if p.model is None:
        return checkpoint, None, p.seed, None
    from curate.models.resolve import resolve_model

    ref = resolve_model(p.model, None, p.seed)
    if ref.pretrained and Path(ref.pretrained).is_file() and checkpoint is None:
        return Path(ref.pretrained), ref.name, ref.seed, None
    return checkpoint, ref.name, ref.seed, ref.pretrained or None


def eval_cmd(run: JobRun, p: EvalParams) -> None:
    from curate import storage
    from curate.commands._common import require_local
    from curate.errors import CurateError
    from curate.evaluate import evaluate

    checkpoint_uri = None
    if p.checkpoint is not None and storage.is_uri(p.checkpoint):
        from curate.evaluate.remote import checkpoint_copy

        local, checkpoint_uri = checkpoint_copy(p.checkpoint)  # open_clip loads a local file
    else:
        local = Path(p.checkpoint) if p.checkpoint is not None else None
    checkpoint, model, seed, tag = _resolve(p, local)
    if checkpoint:
        require_local(str(checkpoint), "path")
    for path in [*p.zeroshot, *p.retrieval, *([p.images] if p.images else [])]:
        if not storage.exists(path):
            raise CurateError(f"{path} does not exist")
    # evaluation sets are small: one on a store is copied to the local input cache first
    copies = {path: storage.local_copy(path) for path in p.zeroshot}
    copies.update({path: _retrieval_copy(path) for path in p.retrieval})
    sources = {v: k for k, v in copies.items() if v != k}
    names = None
    if p.images is not None:
        names = [ln.strip() for ln in storage.read_bytes(p.images).decode().splitlines() if ln.strip()]
    res = evaluate(checkpoint, model, zeroshot=[Path(copies[z]) for z in p.zeroshot],
                   retrieval_sets=[Path(copies[r]) for r in p.retrieval], templates=p.templates,
                   max_per_class=p.max_per_class, retrieval_images=names, output=p.output, device=p.device,
                   batch_size=p.batch_size, seed=seed, pretrained=tag, sources=sources,
                   checkpoint_uri=checkpoint_uri if checkpoint == local else None)
    typer.echo(json.dumps(res["summary"], indent=1, sort_keys=True))
    typer.echo(f"eval: {res['model_id']}: results in {res['results_path']}")


def register(app: typer.Typer) -> None:
    app.command("eval")(job_command(
        EvalParams, eval_cmd, app_name="curate-eval",
        common=Common(None, dataset=False, subset=False, output=False, engine=False, storage=True, lock_first=False),
        help="Evaluate a checkpoint; results JSON beside it, linked from the trained subset's manifest."))
