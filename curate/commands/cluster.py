"""``curate cluster``: FAISS k-means over an embeddings table, every sample assigned."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, open_executor
from curate.embedding_space.cli import echo_guards
from curate.lock import hold_dataset_lock
from curate.models.resolve import model_spec_callback
from curate.names import name_callback


def register(app: typer.Typer) -> None:
    @app.command("cluster")
    def cluster_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder (holds embeddings/<model>/)."),
        k: int = typer.Option(..., "--k", "-k", help="Number of clusters."),
        model: Optional[str] = typer.Option(None, "--embeddings", "--model", "-m",
                                            help="Embeddings table id (embeddings/<id>), open_clip NAME[:TAG] or "
                                            "checkpoint it was embedded with; default: the only one.",
                                            callback=model_spec_callback),
        name: str = typer.Option("kmeans", "--name", help="Clustering name: centroids/, clusters/, cluster_stats/<name>.",
                               callback=name_callback),
        embedding: str = typer.Option("image", "--embedding", help="image, text or concat (both, normalised)."),
        niter: int = typer.Option(20, "--niter", help="k-means iterations."),
        seed: int = typer.Option(0, "--seed", help="Seed of the training sample and of k-means."),
        spherical: bool = typer.Option(True, "--spherical/--euclidean",
                                       help="Spherical (cosine) k-means, as SemDeDup/DBP use; or plain L2."),
        max_points_per_centroid: int = typer.Option(256, "--max-points-per-centroid",
                                                    help="Training sample = k x this (FAISS's cap)."),
        sample_size: Optional[int] = typer.Option(None, "--sample-size", help="Training rows (default k x max-points)."),
        max_sample_gb: float = typer.Option(2.0, "--max-sample-gb",
                                            help="Cap on the float32 training sample held by the driver (GiB); "
                                            "the sample never grows with the pool (docs/scale.md)."),
        subset: Optional[str] = typer.Option(None, "--subset", "-s", help="Train on this subset's samples only."),
        gpu: str = typer.Option("auto", "--gpu", help="auto (faiss-gpu when present), yes or no."),
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Train k-means on a deterministic sample (driver) and assign every sample (Spark tasks)."""
        from curate.embedding_space.clusters import check_cluster, run_cluster
        from curate.embedding_space.common import subset_uids
        from curate.embedding_space.jobs import check_dataset
        from curate.models.resolve import resolve_embeddings
        from curate.tables import Dataset

        if max_sample_gb <= 0:
            raise typer.BadParameter(f"--max-sample-gb must be > 0, got {max_sample_gb}")
        g = {"auto": "auto", "yes": True, "no": False}.get(gpu)
        if g is None:
            raise typer.BadParameter(f"--gpu must be auto, yes or no, got {gpu!r}")
        hold_dataset_lock(dataset)  # one writer per dataset
        ds = check_dataset(Dataset(dataset))
        model = resolve_embeddings(ds, model)
        uids = subset_uids(ds, subset)
        check_cluster(ds, model, k, embedding, niter, max_points_per_centroid, uids)
        executor = open_executor(engine, master, conf, "curate-cluster", dataset=dataset)
        r = run_cluster(ds, model, k, name=name, embedding=embedding, niter=niter, seed=seed, spherical=spherical,
                        max_points_per_centroid=max_points_per_centroid, sample_size=sample_size, gpu=g,
                        executor=executor, input_uids=uids, max_sample_bytes=int(max_sample_gb * (1 << 30)))
        c = r["counts"]
        typer.echo(f"cluster {name}: {c['rows']} samples in {c['clusters']} clusters (trained on {c['train_rows']}; "
                   f"largest {c['largest_cluster']}, empty {c['empty_clusters']}) -> clusters/{name}, "
                   f"cluster_stats/{name}")
        echo_guards(r.get("guards"))
