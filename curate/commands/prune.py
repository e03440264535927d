"""``curate prune dbp|ssp``: cluster-based pruning to a target size."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, open_executor
from curate.embedding_space.cli import ClustersOpt, OutputOpt, SubsetOpt, echo_result, input_uids
from curate.lock import hold_dataset_lock
from curate.names import name_callback

KeepOpt = typer.Option("hard", "--keep", help="Within a cluster keep the hardest (farthest from the centroid), "
                       "easiest, or a seeded random choice: hard, easy, random.")


def register(app: typer.Typer) -> None:
    prune = typer.Typer(help="Prune to a fraction of the input using k-means clusters (DBP, SSP).",
                        no_args_is_help=True)
    app.add_typer(prune, name="prune")

    @prune.command("dbp")
    def dbp_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder."),
        keep_fraction: float = typer.Option(..., "--keep-fraction", help="Fraction of the input to keep (N' = int(F*N))."),
        clusters: str = ClustersOpt,
        temperature: float = typer.Option(0.5, "--temperature", help="Softmax temperature T over cluster complexity."),
        balance_ratio: float = typer.Option(0.5, "--balance-ratio",
                                            help="Lower bound per cluster: min(int(N'/k * ratio), size - 1)."),
        neighbors: int = typer.Option(20, "--neighbors", help="Nearest other centroids averaged for d_inter."),
        keep: str = KeepOpt,
        seed: int = typer.Option(0, "--seed", help="Seed for --keep random."),
        name: str = typer.Option("dbp", "--name", help="Run name (decisions/, subsets/, cluster_stats/<name>).", callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Density-based pruning: quotas by cluster complexity (d_intra x d_inter), exact QP, then per cluster."""
        from curate.embedding_space.jobs import check_prune, run_prune
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        check_prune(ds, clusters, keep_fraction, "dbp", keep, temperature, balance_ratio, neighbors)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-prune-dbp", dataset=dataset)
        echo_result(run_prune(ds, clusters, keep_fraction, method="dbp", run=name, keep=keep, seed=seed,
                              temperature=temperature, balance_ratio=balance_ratio, n_neighbors=neighbors,
                              input_uids=uids, executor=ex, output=output))

    @prune.command("ssp")
    def ssp_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder."),
        keep_fraction: float = typer.Option(..., "--keep-fraction", help="Fraction of every cluster to keep."),
        clusters: str = ClustersOpt,
        keep: str = KeepOpt,
        seed: int = typer.Option(0, "--seed", help="Seed for --keep random."),
        name: str = typer.Option("ssp", "--name", help="Run name.", callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Self-supervised-prototype pruning: the hardest fraction of every cluster (the simple baseline)."""
        from curate.embedding_space.jobs import check_prune, run_prune
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        check_prune(ds, clusters, keep_fraction, "ssp", keep)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-prune-ssp", dataset=dataset)
        echo_result(run_prune(ds, clusters, keep_fraction, method="ssp", run=name, keep=keep, seed=seed,
                              input_uids=uids, executor=ex, output=output))
