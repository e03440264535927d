"""``curate dedup semantic|exact|near|perceptual``: duplicate removal in embedding space, by image
bytes and by perceptual hash."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, open_executor
from curate.embedding_space.cli import ClustersOpt, OutputOpt, SubsetOpt, echo_result, input_uids
from curate.lock import hold_dataset_lock
from curate.models.resolve import model_spec_callback
from curate.names import name_callback


def register(app: typer.Typer) -> None:
    dedup = typer.Typer(help="Remove duplicates: semantic (SemDeDup), exact (image sha256), near (embedding cosine), "
                        "perceptual (image hash within a Hamming radius).",
                        no_args_is_help=True)
    app.add_typer(dedup, name="dedup")

    @dedup.command("semantic")
    def semantic_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder."),
        eps: float = typer.Option(..., "--eps", help="Remove items with cosine > 1 - eps to an earlier item of their cluster."),
        clusters: str = ClustersOpt,
        keep: str = typer.Option("hard", "--keep", help="Which item of a duplicate group survives: hard (farthest from "
                                 "the centroid), easy (nearest) or random (seeded)."),
        seed: int = typer.Option(0, "--seed", help="Seed for --keep random."),
        name: str = typer.Option("semdedup", "--name", help="Run name (decisions/<name>, subsets/<name>).", callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """SemDeDup within each k-means cluster (Spark groups by cluster; blocked matrix products)."""
        from curate.embedding_space.jobs import check_semdedup, run_semdedup
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        check_semdedup(ds, clusters, eps, keep)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-dedup-semantic", dataset=dataset)
        echo_result(run_semdedup(ds, clusters, eps, run=name, keep=keep, seed=seed, input_uids=uids,
                                 executor=ex, output=output))

    @dedup.command("exact")
    def exact_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder (holds downloads/)."),
        name: str = typer.Option("exact_dedup", "--name", help="Run name.", callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Keep one sample (smallest uid) per identical image (sha256 of the downloaded bytes)."""
        from curate.embedding_space.jobs import check_exact_dedup, run_exact_dedup
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        check_exact_dedup(ds)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-dedup-exact", dataset=dataset)
        echo_result(run_exact_dedup(ds, run=name, input_uids=uids, executor=ex, output=output))

    @dedup.command("near")
    def near_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder."),
        threshold: float = typer.Option(0.95, "--threshold", help="Cosine similarity at or above which two samples are duplicates."),
        model: Optional[str] = typer.Option(None, "--embeddings", "--model", "-m",
                                            help="Embeddings table id, open_clip NAME[:TAG] or checkpoint "
                                            "(default: the only table).", callback=model_spec_callback),
        embedding: str = typer.Option("image", "--embedding", help="image, text or concat."),
        keep_by: str = typer.Option("uid", "--keep-by", help="Survivor of a group: uid (smallest) or clip_score (highest)."),
        clusters: Optional[str] = typer.Option(None, "--clusters", "-c",
                                               help="Search an IVF index over this clustering's centroids (large pools).",
                                               callback=name_callback),
        nprobe: int = typer.Option(8, "--nprobe", help="Clusters probed per query with --clusters."),
        name: str = typer.Option("near_dedup", "--name", help="Run name.", callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Group samples linked by embedding cosine >= threshold (FAISS range search); keep one per group."""
        from curate.embedding_space.jobs import check_dataset, check_near_dedup, run_near_dedup
        from curate.models.resolve import resolve_embeddings
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        ds = check_dataset(Dataset(dataset))
        model = resolve_embeddings(ds, model)
        check_near_dedup(ds, model, threshold, keep_by, embedding, clusters, nprobe)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-dedup-near", dataset=dataset)
        echo_result(run_near_dedup(ds, model, threshold, run=name, keep_by=keep_by,
                                   embedding=embedding, clusters=clusters, nprobe=nprobe,
                                   input_uids=uids, executor=ex, output=output))

    @dedup.command("perceptual")
    def perceptual_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder (downloaded image shards, or a phashes table)."),
        radius: int = typer.Option(8, "--radius", help="Hamming distance at or below which two images are duplicates."),
        hash_kind: str = typer.Option("phash", "--hash", help="phash (64 bits), dhash (64) or colorhash (42)."),
        bands: Optional[int] = typer.Option(None, "--bands", help="Bands of the multi-index (default: 16-bit bands)."),
        model: Optional[str] = typer.Option(None, "--embeddings", "--model", "-m",
                                            help="Embeddings table whose CLIP score picks the survivor (default: "
                                            "the only one; none: smallest uid).", callback=model_spec_callback),
        name: str = typer.Option("perceptual_dedup", "--name", help="Run name.", callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Group images whose perceptual hashes are within --radius (multi-index hashing); keep one per group."""
        from curate.perceptual.job import check_perceptual_dedup, run_perceptual_dedup
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        scores = check_perceptual_dedup(ds, radius, hash_kind, bands, model)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-dedup-perceptual", dataset=dataset)
        echo_result(run_perceptual_dedup(ds, radius, hash_kind, run=name, bands=bands,
                                         embeddings=scores.split("/", 1)[1] if scores else None,
                                         input_uids=uids, executor=ex, output=output))
