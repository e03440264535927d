"""``curate cluster``: FAISS k-means over an embeddings table, every sample assigned. Options
come from the job's model (curate/params/embedding_space.py)."""

from __future__ import annotations

import typer

from curate.commands._common import echo_guards
from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.embedding_space import DEFAULT_CLUSTERING, ClusterParams


def cluster(run: JobRun, p: ClusterParams) -> None:
    from curate.embedding_space.clusters import check_cluster, run_cluster
    from curate.embedding_space.jobs.shared import check_dataset
    from curate.models.resolve import resolve_embeddings

    model = resolve_embeddings(check_dataset(run.ds), p.embeddings)
    uids = run.input_uids()
    check_cluster(run.ds, model, p.k, p.embedding, p.niter, p.max_points_per_centroid, uids)
    r = run_cluster(run.ds, model, name=run.name, executor=run.executor(), input_uids=uids, **p.job_kwargs())
    c = r["counts"]
    typer.echo(f"cluster {run.name}: {c['rows']} samples in {c['clusters']} clusters (trained on {c['train_rows']}; "
               f"largest {c['largest_cluster']}, empty {c['empty_clusters']}) -> clusters/{run.name}, "
               f"cluster_stats/{run.name}")
    echo_guards(r.get("guards"))


def register(app: typer.Typer) -> None:
    app.command("cluster")(job_command(
        ClusterParams, cluster, app_name="curate-cluster",
        common=Common(DEFAULT_CLUSTERING, name_help="Clustering name: centroids/, clusters/, cluster_stats/<name>.",
                      dataset_help="Dataset folder or URI (holds embeddings/<model>/).",
                      subset_help="Train on this subset's samples only.", output=False),
        help="Train k-means on a deterministic sample (driver) and assign every sample (Spark tasks)."))
