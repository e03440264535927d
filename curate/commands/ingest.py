"""`curate ingest`: read pools into the uid-keyed samples table."""

from __future__ import annotations

import json

import typer

from curate.commands._common import open_executor, require_paths
from curate.commands._jobcli import Common, JobRun, job_command
from curate.lock import hold_dataset_lock
from curate.params.ingest import IngestParams


def ingest(run: JobRun, p: IngestParams) -> None:
    from curate import storage
    from curate.engine import ENGINES, local_max_rows
    from curate.ingest.job import estimate_input_rows, run_ingest

    if run.engine not in ENGINES:
        raise typer.BadParameter(f"--engine must be one of {', '.join(ENGINES)}, got {run.engine!r}")
    cfg = p.config()
    # inputs named by URI (globs listed on the store) are read in place by the tasks (Parquet by
    # range reads, text and tar formats streamed, an image folder's listing and headers); other
    # objects are copied to a local input cache; source_file and the run manifest name the URIs
    from curate.ingest.plan import fetch_ingest_inputs

    inputs, cfg.sources, cfg.store_folders = fetch_ingest_inputs(list(p.inputs), cfg.format, cfg.listed, p.output)
    cfg.inputs = list(inputs)
    require_paths(inputs, "file or folder")
    # A URI output is written in place by every task (staging, dedup scratch and tables on the store).
    output = cfg.output = storage.resolve(p.output).uri if storage.is_uri(p.output) else p.output
    # The dataset does not exist yet: --engine auto sizes the job by its inputs.
    rows = (estimate_input_rows(cfg, stop_above=local_max_rows())
            if run.engine == "auto" and not run.master and not run.conf else None)
    hold_dataset_lock(output, create=True)  # one writer per dataset
    result = run_ingest(open_executor(run.engine, run.master, run.conf, run.app_name, rows=rows, shared=cfg.output),
                        cfg)
    _report(result)
    from curate.progress import info

    for uri in sorted(cfg.store_folders):  # their urls are the objects' URIs: say how to fetch them
        info(f"ingest: the urls of {uri} are its objects' URIs; download them with "
             f"--allow-store-prefix {uri.rstrip('/')}/")


# the dataset is --output, made by the body; inputs are the arguments
NO_DATASET = Common(None, dataset=False, subset=False, output=False, storage=True, lock_first=False)


def register(app: typer.Typer) -> None:
    app.command("ingest")(job_command(
        IngestParams, ingest, app_name="curate-ingest", common=NO_DATASET,
        help="Read pools into DATASET/samples (uid-keyed, deduplicated), with rejects and duplicates beside it.\n\n"
        "Every input row ends in exactly one of samples, duplicates or rejects; the counts and the inputs' "
        "fingerprints are written to DATASET/_runs/ingest.json."))


def _say_columns(inputs: list[dict]) -> None:
    """Which columns the url and caption came from, where not ones named url and text: a name
    picked among the ones ingest tries (image_url, alt, title, ...), or mapped; per mapping, the
    first file and how many more."""
    from curate.progress import info

    by_map: dict[tuple, list[str]] = {}
    for f in inputs:
        cols = f.get("columns")
        if cols and (cols.get("url"), cols.get("text")) != ("url", "text"):
            by_map.setdefault((cols["url"], cols["text"]), []).append(str(f.get("path")))
    for (url, text), paths in by_map.items():
        more = f" and {len(paths) - 1:,} more" if len(paths) > 1 else ""
        info(f"columns: url from {url!r}, caption from {text!r} ({paths[0]}{more}); map others with --url-col/--text-col")


def _report(result: dict) -> None:
    """Where every input row went, in a few lines."""
    from curate.progress import info

    c = result["counts"]
    info(f"ingest: {c['input_rows']} rows in -> {c['kept']} samples, {c['duplicates']} duplicates, "
         f"{c['rejects']} rejects ({result['timings_s']['total']:.1f} s)")
    if c["reject_reasons"]:
        info("reject reasons: " + json.dumps(c["reject_reasons"]))
    _say_columns(result.get("inputs") or [])
    if c["input_rows"] and not c["kept"]:  # exit 0 all the same: every row is accounted for
        info("warning: no samples: every input row was rejected or a duplicate (the reasons above; each row's "
             "detail is in the rejects table)")
    if c.get("files_skipped"):
        info("input files not read: " + json.dumps(c["files_skipped"]) + " (listed in _runs/ingest.json)")
    if c.get("url_text_duplicates"):
        info(f"{c['url_text_duplicates']} samples repeat an earlier (url, text) with their own uid "
             "(kept; listed in url_text_duplicates)")
    replaced = result.get("replaced") or {}
    derived = replaced.get("derived_tables")
    if derived and replaced.get("earlier_samples_gone") == 0:  # the inputs grew: every earlier sample kept
        info(f"these samples extend an earlier ingest's (every earlier sample is kept): {', '.join(derived[:6])}"
             f"{' ...' if len(derived) > 6 else ''} still apply; download and embed again to cover the new ones")
    elif derived:
        shown = ", ".join(derived[:6]) + (f" and {len(derived) - 6} more" if len(derived) > 6 else "")
        gone = replaced.get("earlier_samples_gone")
        info(f"warning: these samples replaced an earlier ingest's (other inputs or options"
             f"{f'; {gone:,} earlier samples are gone' if gone else ''}); {shown} were made "
             "from the earlier samples and keep rows of any that are gone. To add inputs to a pool, ingest every "
             "input together: uids derive from url and text, so downloads and embeddings of the samples kept "
             "still apply")
    for table, out in result["outputs"].items():
        if table.startswith("embeddings/"):
            info(f"{table}: {out['rows']} rows imported from the pool's .npz files")
