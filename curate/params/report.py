"""Parameters of ``curate report``: a static HTML report of a subset and its run."""

from __future__ import annotations

from typing import List, Optional

from pydantic import Field, field_validator

from curate.params import JobParams, Name, cli_extra


class ReportParams(JobParams):
    subset: Optional[Name] = Field(None, description="Subset to report on, however it was made (run, select, filter, "
                                   "import): its lineage, galleries and the evaluations its manifest lists. Default: "
                                   "the output of the latest `curate run`, else the only subset.",
                                   json_schema_extra=cli_extra("--subset", "-s"))
    out: Optional[str] = Field(None, description="HTML file: a path or a URI (s3://bucket/report.html; default "
                               "DATASET/reports/SUBSET.html).", json_schema_extra=cli_extra("--out", "-o"))
    eval: List[str] = Field([], description="LABEL=PATH of an evaluation JSON (curate eval), repeatable; those the "
                            "subset's manifest lists are added.")
    comparison: Optional[str] = Field(None, description="Multi-seed comparison JSON (curate demo writes one).")
    pool_subset: Optional[str] = Field(None, description="Subset to compare against (default: every downloaded "
                                       "sample).")
    embeddings: Optional[str] = Field(None, description="Embeddings for the CLIP score histogram: table id, "
                                      "open_clip NAME[:TAG] or checkpoint (default: the recipe's).",
                                      json_schema_extra=cli_extra("--embeddings", "--embedding-model"))
    title: Optional[str] = Field(None, description="The page's title (default: \"curate report: SUBSET\").")
    open: bool = Field(False, description="Open the report in a browser when done.")

    @field_validator("eval")
    @classmethod
    def _label_path(cls, items: list[str]) -> list[str]:
        seen = set()
        for item in items:
            if "=" not in item:
                raise ValueError(f"expects LABEL=PATH, got {item!r}")
            label = item.split("=", 1)[0]
            if label in seen:  # a dict of runs by label kept the last one in silence
                raise ValueError(f"label {label!r} given twice; give each run its own label")
            seen.add(label)
        return items

    def evals(self) -> dict:
        from pathlib import Path

        return {k: Path(v) for k, v in (item.split("=", 1) for item in self.eval)}
