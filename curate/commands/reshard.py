"""``curate reshard``: a subset as WebDataset training shards."""

from __future__ import annotations

import typer

from curate.commands._common import require_paths, require_tables
from curate.commands._jobcli import Common, JobRun, job_command
from curate.names import check_folder_output, check_output_path
from curate.params.reshard import ReshardParams


def reshard_cmd(run: JobRun, p: ReshardParams) -> None:
    from curate.reshard import reshard

    dataset = run.dataset
    output = p.output and check_output_path(p.output, dataset, "--output")
    if output:
        check_folder_output(output, "--output")
    run.lock()
    require_tables(dataset, {}, remote_ok=True)
    if p.subset_file is not None:
        require_paths([p.subset_file], "subset file")
    elif p.subset is not None:
        from curate import storage
        from curate.errors import DatasetError
        from curate.subset import subset_dir
        from curate.tables import Dataset

        if not storage.is_dir(subset_dir(Dataset(dataset), p.subset)):
            raise DatasetError(f"subset not found: {subset_dir(Dataset(dataset), p.subset)}")
    meta = reshard(dataset, p.subset, output, executor=run.executor(), **p.job_kwargs())
    c = meta["counts"]
    missing = ", ".join(f"{k}={v}" for k, v in c["not_written"].items()) or "none"
    typer.echo(f"reshard: {c['written']} of {c['subset_rows']} subset rows written to "
               f"{meta['output_shard_count']} shards in {meta['output_dir']} (not written: {missing})")


def register(app: typer.Typer) -> None:
    app.command("reshard")(job_command(
        ReshardParams, reshard_cmd, app_name="curate-reshard",
        common=Common(None, dataset_help="Dataset folder or URI (holds downloads/ and images/*.tar).", subset=False,
                      output=False, storage=True, lock_first=False),  # the output path is checked first
        help="Write a subset's samples (repeats as uid-0, uid-1, ...) as WebDataset tars with meta.json."))
