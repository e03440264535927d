"""The ``perceptual_dedup`` stage: images within a Hamming radius of each other's perceptual
hash (``curate.perceptual``), one kept per group (highest CLIP score of the recipe's
embedding model when it has one, then smallest uid). Same parameters as
``curate dedup perceptual``."""

from __future__ import annotations

from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from curate.params.perceptual import PerceptualDedupParams
from curate.recipe.registry import StageContext, StageResult, register


def _reads(p: PerceptualDedupParams, dataset, model: Optional[str]) -> list[str]:
    m = p.embeddings or model
    # hashes are a function of the downloaded images: a phashes table the stage itself writes
    # must not change its cache key between the first run and the next
    return ["downloads", *([f"embeddings/{m}"] if m else [])]


@register("perceptual_dedup", PerceptualDedupParams, family="dedup", reads=_reads,
          code_modules=("curate.perceptual",))
def run_perceptual_stage(ctx: StageContext, uids: pa.Array, p: PerceptualDedupParams) -> StageResult:
    """Perceptual duplicates (pHash within a Hamming radius, multi-index hashing): keep one per group."""
    from curate.perceptual.job import run_perceptual_dedup

    model = p.embeddings
    if model is None and ctx.embedding_model and ctx.dataset.has_table(f"embeddings/{ctx.embedding_model}"):
        model = ctx.embedding_model  # the recipe's scores; without them, smallest uid survives
    r = run_perceptual_dedup(ctx.dataset, run=ctx.run_name, embeddings=model, input_uids=pc.unique(uids),
                             executor=ctx.executor(), **p.job_kwargs())
    w = (r.get("guards") or {}).get("warnings")
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **({"warnings": w} if w else {})})
