"""Parameters of ``curate run``: a recipe file and what the command line overrides in it."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from curate.params import JobParams, Name, cli_extra
from curate.params.common import ModelId


class RunParams(JobParams):
    recipe: str = Field(description="Recipe YAML, a file or a URI (see docs/recipe.md).",
                        json_schema_extra=cli_extra(argument=True))
    dataset: Optional[str] = Field(None, description="Dataset folder or URI (s3://bucket/ds, gs://...: read and "
                                   "written there); overrides the recipe's 'dataset'.",
                                   json_schema_extra=cli_extra("-d"))
    output: Optional[Name] = Field(None, description="Subset name; overrides the recipe's 'output'.",
                                   json_schema_extra=cli_extra("-o"))
    embedding_model: Optional[ModelId] = Field(None, description="Model id (embeddings/<id>); overrides the recipe's.",
                                               json_schema_extra=cli_extra("-m"))
    no_cache: bool = Field(False, description="Recompute every stage (the cache is still refreshed).",
                           json_schema_extra=cli_extra(negative="--cache"))
    check: bool = Field(False, description="Only validate the recipe and list its stages.")
