"""``curate prune dbp|ssp``: cluster-based pruning to a target size. Options come from the
job's models (curate/params/embedding_space.py)."""

from __future__ import annotations

import typer

from curate.commands._jobcli import Common, JobRun, echo_result, job_command
from curate.params.embedding_space import DBPParams, PruneParams, clusters_name


def prune(run: JobRun, p: PruneParams, method: str) -> None:
    from curate.embedding_space.jobs.prune import check_prune, run_prune

    clusters = clusters_name(p.clusters)
    dbp = dict(temperature=p.temperature, balance_ratio=p.balance_ratio, n_neighbors=p.neighbors) \
        if isinstance(p, DBPParams) else {}
    check_prune(run.ds, clusters, p.keep_fraction, method, p.keep, **dbp)
    uids = run.input_uids()
    echo_result(run_prune(run.ds, clusters, method=method, run=run.name, input_uids=uids, executor=run.executor(),
                          output=run.output, **p.job_kwargs()))


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Prune to a fraction of the input using k-means clusters (DBP, SSP).",
                        no_args_is_help=True)
    app.add_typer(group, name="prune")
    group.command("dbp")(job_command(
        DBPParams, lambda run, p: prune(run, p, "dbp"), app_name="curate-prune-dbp",
        common=Common("dbp", name_help="Run name (decisions/, subsets/, cluster_stats/<name>)."),
        help="Density-based pruning: quotas by cluster complexity (d_intra x d_inter), exact QP, then per cluster."))
    group.command("ssp")(job_command(
        PruneParams, lambda run, p: prune(run, p, "ssp"), common=Common("ssp"), app_name="curate-prune-ssp",
        help="Self-supervised-prototype pruning: the hardest fraction of every cluster (the simple baseline)."))
