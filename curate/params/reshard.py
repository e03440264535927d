"""Parameters of ``curate reshard``: the ``reshard`` function's arguments."""

from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from curate.params import JobParams, Name, cli_extra


class ReshardParams(JobParams):
    subset: Optional[Name] = Field(None, description="Subset name (DATASET/subsets/NAME).",
                                   json_schema_extra=cli_extra("-s"))
    subset_file: Optional[str] = Field(None, description="Any subset file instead (path or URI): folder, "
                                       "uids.parquet or DataComp .npy.")
    output: Optional[str] = Field(None, description="Output folder or URI (s3://bucket/shards; default "
                                  "DATASET/webdataset/<subset>). On object storage each tar is one whole object.",
                                  json_schema_extra=cli_extra("--out", "-o"))
    shard_size: int = Field(10_000, ge=1, description="Samples per output shard.")
    shuffle: bool = Field(False, description="Shuffle source-shard order and samples within each shard.",
                          json_schema_extra=cli_extra(negative="--no-shuffle"))
    seed: int = Field(0, description="Shuffle seed.")
    overwrite: bool = Field(False, description="Replace a different reshard in --output.")

    # the command resolves and checks the output path and passes the subset first
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"subset", "output"})
