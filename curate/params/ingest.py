"""Parameters of ``curate ingest``; ``config()`` is the job's ``IngestConfig``."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from curate.params import JobParams, cli_extra


class IngestParams(JobParams):
    inputs: list[str] = Field(description="Input files or folders (Parquet, CSV, TSV, JSONL, COCO JSON, WebDataset "
                              "tars, img2dataset output, image folders).", json_schema_extra=cli_extra(argument=True))
    output: str = Field(description="Dataset folder or URI (s3://bucket/ds, ...) to write (samples, rejects, "
                        "duplicates).", json_schema_extra=cli_extra("-o"))
    format: Optional[str] = Field(None, description="Force a format: parquet, datacomp, csv, tsv, jsonl, coco, "
                                  "webdataset, img2dataset, imagefolder. Default: by extension/content.")
    url_col: Optional[str] = Field(None, description="Column holding the image URL (headerless CSV/TSV: its "
                                   "0-based index).")
    text_col: Optional[str] = Field(None, description="Column holding the caption.")
    uid_col: Optional[str] = Field(None, description="Column holding an existing 128-bit hex uid (DataComp: uid).")
    width_col: Optional[str] = Field(None, description="Column holding the original image width.")
    height_col: Optional[str] = Field(None, description="Column holding the original image height.")
    image_col: Optional[str] = Field(None, description="Image folders: captions-file column naming the image file.")
    captions: Optional[str] = Field(None, description="Image folders: captions file (CSV/TSV/JSONL); default "
                                    "captions.* inside the folder, else name.txt sidecars.")
    header: Literal["auto", "yes", "no"] = Field("auto", description="CSV/TSV header line: yes, no, or auto (no "
                                                 "header when the first row holds a URL).")
    rows_per_shard: int = Field(500_000, ge=1, description="Rows per output Parquet shard.")
    # the library's defaults (IngestRules); tests/recipe/test_command_params.py keeps them equal
    max_text_chars: int = Field(100_000, ge=1, description="Longer captions are rejected (text_too_long).")
    max_url_chars: int = Field(4096, ge=1, description="Longer URLs are rejected (url_too_long).")
    faithful: Optional[bool] = Field(None, description="Keep captions raw, keep any stated size, never merge rows "
                                     "with distinct input uids (DataComp's semantics; docs/filters.md). Default: on "
                                     "for --format datacomp, off otherwise.",
                                     json_schema_extra=cli_extra(negative="--no-faithful"))

    def config(self):
        """The job's ``IngestConfig`` (inputs and output as given)."""
        from curate.ingest.job import IngestConfig
        from curate.ingest.stage import IngestRules
        from curate.readers import ColumnMap, ReaderOptions

        columns = ColumnMap(url=self.url_col, text=self.text_col, uid=self.uid_col, width=self.width_col,
                            height=self.height_col, image=self.image_col)
        faithful = (self.format == "datacomp") if self.faithful is None else self.faithful
        return IngestConfig(
            inputs=list(self.inputs), output=self.output, format=self.format,
            options=ReaderOptions(columns=columns, header=self.header, captions=self.captions),
            rules=IngestRules(max_text_chars=self.max_text_chars, max_url_chars=self.max_url_chars,
                              faithful=faithful),
            rows_per_shard=self.rows_per_shard)
