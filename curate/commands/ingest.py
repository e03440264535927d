"""`curate ingest`: read pools into the uid-keyed samples table."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from curate.commands._common import (ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor,
                                     require_paths, use_storage_options)
from curate.ingest.stage import IngestRules
from curate.lock import hold_dataset_lock


# register and ingest are over 60 lines by ingest's signature (its option list), not their bodies.
def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest(
        inputs: List[str] = typer.Argument(..., help="Input files or folders (Parquet, CSV, TSV, JSONL, COCO JSON, "
                                                     "WebDataset tars, img2dataset output, image folders)."),
        output: str = typer.Option(..., "--output", "-o", help="Dataset folder or URI (s3://bucket/ds, ...) to write "
                                                               "(samples, rejects, duplicates)."),
        fmt: Optional[str] = typer.Option(None, "--format", help="Force a format: parquet, datacomp, csv, tsv, jsonl, "
                                                                 "coco, webdataset, img2dataset, imagefolder. Default: by extension/content."),
        url_col: Optional[str] = typer.Option(None, "--url-col", help="Column holding the image URL (headerless CSV/TSV: its 0-based index)."),
        text_col: Optional[str] = typer.Option(None, "--text-col", help="Column holding the caption."),
        uid_col: Optional[str] = typer.Option(None, "--uid-col", help="Column holding an existing 128-bit hex uid (DataComp: uid)."),
        width_col: Optional[str] = typer.Option(None, "--width-col", help="Column holding the original image width."),
        height_col: Optional[str] = typer.Option(None, "--height-col", help="Column holding the original image height."),
        image_col: Optional[str] = typer.Option(None, "--image-col", help="Image folders: captions-file column naming the image file."),
        captions: Optional[str] = typer.Option(None, "--captions", help="Image folders: captions file (CSV/TSV/JSONL); default captions.* inside the folder, else name.txt sidecars."),
        header: str = typer.Option("auto", "--header", help="CSV/TSV header line: yes, no, or auto (no header when the first row holds a URL)."),
        rows_per_shard: int = typer.Option(500_000, "--rows-per-shard", help="Rows per output Parquet shard."),
        max_text_chars: int = typer.Option(IngestRules.max_text_chars, "--max-text-chars", min=1,
                                           help="Longer captions are rejected (text_too_long)."),
        max_url_chars: int = typer.Option(IngestRules.max_url_chars, "--max-url-chars", min=1,
                                          help="Longer URLs are rejected (url_too_long)."),
        faithful: Optional[bool] = typer.Option(None, "--faithful/--no-faithful",
                                                help="Keep captions raw, keep any stated size, never merge rows with "
                                                     "distinct input uids (DataComp's semantics; docs/filters.md). "
                                                     "Default: on for --format datacomp, off otherwise."),
        master: Optional[str] = MasterOpt,
        conf: List[str] = ConfOpt,
        engine: str = EngineOpt,
        storage_option: List[str] = StorageOpt,
    ):
        """Read pools into DATASET/samples (uid-keyed, deduplicated), with rejects and duplicates beside it.

        Every input row ends in exactly one of samples, duplicates or rejects; the counts and the
        inputs' fingerprints are written to DATASET/_runs/ingest.json.
        """
        from curate import storage
        from curate.ingest.job import IngestConfig, estimate_input_rows, run_ingest
        from curate.tables.publish import work_folder
        from curate.progress import info
        from curate.readers import ColumnMap, ReaderOptions

        from curate.engine import ENGINES

        if header not in ("auto", "yes", "no"):
            raise typer.BadParameter("--header must be yes, no or auto")
        if engine not in ENGINES:
            raise typer.BadParameter(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        cfg = IngestConfig(
            inputs=list(inputs), output=output, format=fmt,
            options=ReaderOptions(columns=ColumnMap(url=url_col, text=text_col, uid=uid_col, width=width_col,
                                                    height=height_col, image=image_col),
                                  header=header, captions=captions),
            rules=IngestRules(max_text_chars=max_text_chars, max_url_chars=max_url_chars,
                              faithful=(fmt == "datacomp") if faithful is None else faithful),
            rows_per_shard=rows_per_shard,
        )
        use_storage_options(storage_option)
        # inputs named by URI (globs listed on the store) are copied to a local input cache;
        # source_file and the run manifest name the URIs
        inputs, cfg.sources = storage.fetch_inputs(list(inputs))
        cfg.inputs = list(inputs)
        require_paths(inputs, "file or folder")
        remote = None
        if storage.is_uri(output):  # ingest writes a local working folder, published when done
            remote = (work_folder(output, master), storage.resolve(output).uri)
            hold_dataset_lock(remote[1])
            cfg.output = output = str(remote[0])
        # The dataset does not exist yet: --engine auto sizes the job by its inputs.
        rows = estimate_input_rows(cfg) if engine == "auto" and not master and not conf else None
        hold_dataset_lock(output, create=True)  # one writer per dataset
        executor = open_executor(engine, master, conf, app_name="curate-ingest", rows=rows)
        result = run_ingest(executor, cfg)
        if remote:
            from curate.tables.publish import publish

            pub = publish(*remote)
            info(f"ingest: published to {remote[1]} ({pub['uploaded']} objects written, "
                 f"{pub['skipped']} shards already there)")
        _report(result)


def _report(result: dict) -> None:
    """Where every input row went, in a few lines."""
    from curate.progress import info

    c = result["counts"]
    info(f"ingest: {c['input_rows']} rows in -> {c['kept']} samples, {c['duplicates']} duplicates, "
         f"{c['rejects']} rejects ({result['timings_s']['total']:.1f} s)")
    if c["reject_reasons"]:
        info("reject reasons: " + json.dumps(c["reject_reasons"]))
    if c.get("files_skipped"):
        info("input files not read: " + json.dumps(c["files_skipped"]) + " (listed in _runs/ingest.json)")
    if c.get("url_text_duplicates"):
        info(f"{c['url_text_duplicates']} samples repeat an earlier (url, text) with their own uid "
             "(kept; listed in url_text_duplicates)")
    for table, out in result["outputs"].items():
        if table.startswith("embeddings/"):
            info(f"{table}: {out['rows']} rows imported from the pool's .npz files")
