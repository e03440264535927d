"""``curate reshard``: a subset as WebDataset training shards."""

from __future__ import annotations

from typing import Optional

import typer

from curate.commands._common import (ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor, require_paths,
                                     require_tables, use_storage_options)
from curate.lock import hold_dataset_lock
from curate.names import check_output_path, name_callback


def register(app: typer.Typer) -> None:
    @app.command("reshard")
    def reshard_cmd(
        dataset: str = typer.Argument(..., help="Dataset folder or URI (holds downloads/ and images/*.tar)."),
        subset: Optional[str] = typer.Option(None, "--subset", "-s", help="Subset name (DATASET/subsets/NAME).", callback=name_callback),
        subset_file: Optional[str] = typer.Option(
            None, "--subset-file", help="Any subset file instead (path or URI): folder, uids.parquet or DataComp .npy."),
        output: Optional[str] = typer.Option(
            None, "--output", "--out", "-o", help="Output folder or URI (s3://bucket/shards; default "
            "DATASET/webdataset/<subset>). On object storage each tar is one whole object."),
        shard_size: int = typer.Option(10_000, "--shard-size", help="Samples per output shard."),
        shuffle: bool = typer.Option(False, "--shuffle/--no-shuffle",
                                     help="Shuffle source-shard order and samples within each shard."),
        seed: int = typer.Option(0, "--seed", help="Shuffle seed."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different reshard in --output."),
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
        storage_option: list[str] = StorageOpt,
    ) -> None:
        """Write a subset's samples (repeats as uid-0, uid-1, ...) as WebDataset tars with meta.json."""
        from curate.reshard import reshard

        use_storage_options(storage_option)
        output = output and check_output_path(output, dataset, "--output")
        hold_dataset_lock(dataset)  # one writer per dataset
        require_tables(dataset, {}, remote_ok=True)
        if subset_file is not None:
            require_paths([subset_file], "subset file")
        elif subset is not None:
            from curate import storage
            from curate.errors import DatasetError
            from curate.subset import subset_dir
            from curate.tables import Dataset

            if not storage.is_dir(subset_dir(Dataset(dataset), subset)):
                raise DatasetError(f"subset not found: {subset_dir(Dataset(dataset), subset)}")
        executor = open_executor(engine, master, conf, "curate-reshard", dataset=dataset)
        meta = reshard(dataset, subset, output, subset_file=subset_file, shard_size=shard_size,
                       shuffle=shuffle, seed=seed, overwrite=overwrite, executor=executor)
        c = meta["counts"]
        missing = ", ".join(f"{k}={v}" for k, v in c["not_written"].items()) or "none"
        typer.echo(f"reshard: {c['written']} of {c['subset_rows']} subset rows written to "
                   f"{meta['output_shard_count']} shards in {meta['output_dir']} (not written: {missing})")
