"""Parameters of ``curate select``: a subset from a SQL query or imported from a subset file."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from curate.params import Name, cli_extra
from curate.params.common import ModelId
from curate.params.sql import DuckDBMemory


class SelectParams(DuckDBMemory):
    sql: Optional[str] = Field(None, description="SELECT returning a uid column; every table is a view (samples, "
                               "downloads, embeddings_<model>, decisions_<run>, subsets_<name>...). A uid returned k "
                               "times is kept k times (upsampling).")
    from_file: Optional[str] = Field(None, description="Import a DataComp subset file (a path or URI) instead: a "
                                     "u8,u8 .npy (apply_filter.py's output) or the same records without a header "
                                     "(raw memmap), or a curate subset folder/uids.parquet. Unsorted files are sorted, "
                                     "with a warning.")
    name: Name = Field(description="Subset name: written to subsets/NAME/.", json_schema_extra=cli_extra("-n"))
    embedding_model: Optional[ModelId] = Field(None, description="Model whose table is also the view 'embeddings'.")
    allow_unknown: bool = Field(False, description="Drop uids that are not in samples instead of failing.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.sql is None) == (self.from_file is None):
            raise ValueError("curate select needs exactly one of --sql QUERY or --from-file PATH")
        return self
