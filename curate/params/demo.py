"""Parameters of ``curate demo`` (no recipe stage: the demo runs a whole recipe itself)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from curate.params import JobParams, cli_extra


class DemoParams(JobParams):
    workdir: str = Field("demo-output", description="Local folder for everything the demo writes (the demo serves "
                         "and trains on this machine; no object storage).", json_schema_extra=cli_extra("-w"))
    # the keys of curate.demo.run.SCALES (tests/recipe/test_job_params.py checks they agree)
    scale: Literal["default", "tiny"] = Field("default", description="default (about 3 min on 2 idle cores) or tiny "
                                              "(smoke run).")
    seeds: int = Field(3, ge=1, description="Training seeds per arm.")
    samples_seen: Optional[int] = Field(None, ge=1, description="Samples seen per baseline model.")
    pool_size: Optional[int] = Field(None, ge=1, description="Samples in the generated pool.")
    recipe: Optional[str] = Field(None, description="Recipe to curate with (default recipes/demo.yaml).")
    master: str = Field("local[2]", description="Spark master for the jobs.")
    engine: str = Field("spark", description="spark or local.")
    open: bool = Field(False, description="Open the report in a browser at the end.")
