"""Parameters of ``curate coverage`` and the ``coverage`` recipe stage."""

from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field, model_validator

from curate.params import JobParams, ModelSpec


class CoverageParams(JobParams):
    concepts: Optional[str] = Field(None, description="Concept list: one concept a line (also ImageNet synset lines "
                                    "'n01440764 tench, ...' and WordNet names 'hot_dog.n.01'), or a .csv/.tsv with a "
                                    "concept column.")
    eval: Optional[str] = Field(None, description="An eval set FOLDER/<class>/: its class names.")
    metadata: Optional[str] = Field(None, description="MetaCLIP metadata JSON: its entries, as is.")
    pool: str = Field("auto", description="The population subsets are compared with: all, downloaded, subset:NAME, "
                      "or auto (downloaded when a downloads table exists, else all).")
    embeddings: Optional[ModelSpec] = Field(None, description="Also count by image: embeddings table id (or model "
                                            "spec) whose image embeddings are compared with the concept prompts' text "
                                            "embeddings (in a recipe: default its embedding_model).")
    threshold: Optional[float] = Field(None, ge=-1, le=1, description="Image match: cosine of image and concept "
                                       "prompt embeddings at least this (needs embeddings).")
    templates: Optional[str] = Field(None, description="Prompt templates for image matching: default, openai, simple "
                                     "or a file (as curate eval).")
    min_pool_count: int = Field(20, ge=0, description="Starved concepts: only those with at least this many pool "
                                "samples (so noise does not dominate).")
    device: str = Field("cpu", description="Device for the concept prompt embeddings.")
    batch_size: int = Field(65536, ge=1, description="Rows per Arrow batch inside a task.")

    # the concept source becomes the concept list; the embeddings a table id
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"concepts", "eval", "metadata", "embeddings"})

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.concepts, self.eval, self.metadata)) != 1:
            raise ValueError("give exactly one concept source: --concepts FILE, --eval FOLDER or --metadata FILE "
                             "(in a recipe: concepts, eval or metadata)")
        return self
