"""The ``perceptual_dedup`` stage: images within a Hamming radius of each other's perceptual
hash (``curate.perceptual``), one kept per group (highest CLIP score of the recipe's
embedding model when it has one, then smallest uid). Same parameters as
``curate dedup perceptual``."""

from __future__ import annotations

from typing import Optional

from curate.params.perceptual import PerceptualDedupParams
from curate.recipe.registry import StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable


def _reads(p: PerceptualDedupParams, dataset, model: Optional[str]) -> list[str]:
    m = p.embeddings or model
    # hashes are a function of the downloaded images: a phashes table the stage itself writes
    # must not change its cache key between the first run and the next
    return ["downloads", *([f"embeddings/{m}"] if m else [])]


@register("perceptual_dedup", PerceptualDedupParams, family="dedup", reads=_reads,
          code_modules=("curate.perceptual",), frames=True)
def run_perceptual_stage(ctx: StageContext, inp: UidTable, p: PerceptualDedupParams) -> StageOutput:
    """Perceptual duplicates (pHash within a Hamming radius, multi-index hashing): keep one per group."""
    from curate.perceptual.job import run_perceptual_dedup

    model = p.embeddings
    if model is None and ctx.embedding_model and ctx.dataset.has_table(f"embeddings/{ctx.embedding_model}"):
        model = ctx.embedding_model  # the recipe's scores; without them, smallest uid survives
    r = run_perceptual_dedup(ctx.dataset, run=ctx.run_name, embeddings=model, input_uids=inp.uid_list(ctx.dataset),
                             executor=ctx.executor(), **p.job_kwargs())
    w = (r.get("guards") or {}).get("warnings")
    # the job's decisions/<run>; the runner restricts it to the input with the engine
    return StageOutput(f"decisions/{ctx.run_name}", stats={**r.get("counts", {}), **({"warnings": w} if w else {})})
