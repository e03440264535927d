"""The ``perceptual_dedup`` stage: images within a Hamming radius of each other's perceptual
hash (``curate.perceptual``), one kept per group (highest CLIP score of the recipe's
embedding model when it has one, then smallest uid). Same parameters as
``curate dedup perceptual``."""

from __future__ import annotations

from typing import Literal, Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.recipe.registry import Params, StageContext, StageResult, register


class PerceptualDedupParams(Params):
    radius: int = Field(8, ge=0, le=64, description="Hamming distance at or below which two images are duplicates")
    hash: Literal["phash", "dhash", "colorhash"] = "phash"
    bands: Optional[int] = Field(None, ge=1, le=64, description="bands of the multi-index (default: 16-bit bands)")
    model: Optional[str] = Field(None, description="embeddings table whose CLIP score picks the survivor "
                                 "(default: the recipe's embedding_model; none: smallest uid)")


def _reads(p: PerceptualDedupParams, dataset, model: Optional[str]) -> list[str]:
    m = p.model or model
    # hashes are a function of the downloaded images: a phashes table the stage itself writes
    # must not change its cache key between the first run and the next
    return ["downloads", *([f"embeddings/{m}"] if m else [])]


@register("perceptual_dedup", PerceptualDedupParams, family="dedup", reads=_reads,
          code_modules=("curate.perceptual",))
def run_perceptual_stage(ctx: StageContext, uids: pa.Array, p: PerceptualDedupParams) -> StageResult:
    """Perceptual duplicates (pHash within a Hamming radius, multi-index hashing): keep one per group."""
    from curate.perceptual.job import run_perceptual_dedup

    model = p.model
    if model is None and ctx.embedding_model and ctx.dataset.has_table(f"embeddings/{ctx.embedding_model}"):
        model = ctx.embedding_model  # the recipe's scores; without them, smallest uid survives
    r = run_perceptual_dedup(ctx.dataset, p.radius, p.hash, run=ctx.run_name, bands=p.bands, embeddings=model,
                             input_uids=pc.unique(uids), executor=ctx.executor())
    w = (r.get("guards") or {}).get("warnings")
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **({"warnings": w} if w else {})})
