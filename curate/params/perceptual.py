"""Parameters of ``curate dedup perceptual`` and the ``perceptual_dedup`` recipe stage."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import AliasChoices, Field

from curate.params import JobParams, ModelSpec, cli_extra


class PerceptualDedupParams(JobParams):
    radius: int = Field(8, ge=0, le=64, description="Hamming distance at or below which two images are duplicates.")
    hash: Literal["phash", "dhash", "colorhash"] = Field("phash", description="phash (64 bits), dhash (64) or "
                                                         "colorhash (42).")
    bands: Optional[int] = Field(None, ge=1, le=64, description="Bands of the multi-index (default: 16-bit bands).")
    embeddings: Optional[ModelSpec] = Field(
        None, description="Embeddings table whose CLIP score picks the survivor (default: the only one, in a "
        "recipe its embedding_model; none: smallest uid).", validation_alias=AliasChoices("embeddings", "model"),
        json_schema_extra=cli_extra("-m", deprecated=("--model",)))

    job_arg_names: ClassVar[dict[str, str]] = {"hash": "hash_kind"}
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"embeddings"})
