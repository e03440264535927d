"""``curate dedup semantic|exact|near|perceptual``: duplicate removal in embedding space, by image
bytes and by perceptual hash. Options come from the jobs' models (curate/params/)."""

from __future__ import annotations

import typer

from curate.commands._jobcli import Common, JobRun, echo_result, job_command
from curate.params.embedding_space import (ExactDedupParams, NearDedupParams, SemDeDupParams, clusters_name)
from curate.params.perceptual import PerceptualDedupParams


def semantic(run: JobRun, p: SemDeDupParams) -> None:
    from curate.embedding_space.jobs.semdedup import check_semdedup, run_semdedup

    clusters = clusters_name(p.clusters)
    check_semdedup(run.ds, clusters, p.eps, p.keep)
    uids = run.input_uids()
    echo_result(run_semdedup(run.ds, clusters, run=run.name, input_uids=uids, executor=run.executor(),
                             output=run.output, **p.job_kwargs()))


def exact(run: JobRun, p: ExactDedupParams) -> None:
    from curate.embedding_space.jobs.exact_dedup import check_exact_dedup, run_exact_dedup

    check_exact_dedup(run.ds)
    uids = run.input_uids()
    echo_result(run_exact_dedup(run.ds, run=run.name, input_uids=uids, executor=run.executor(), output=run.output))


def near(run: JobRun, p: NearDedupParams) -> None:
    from curate.embedding_space.jobs.near_dedup import check_near_dedup, run_near_dedup
    from curate.embedding_space.jobs.shared import check_dataset
    from curate.models.resolve import resolve_embeddings

    model = resolve_embeddings(check_dataset(run.ds), p.embeddings)
    check_near_dedup(run.ds, model, p.threshold, p.keep_by, p.embedding, p.clusters, p.nprobe)
    uids = run.input_uids()
    echo_result(run_near_dedup(run.ds, model, run=run.name, input_uids=uids, executor=run.executor(),
                               output=run.output, **p.job_kwargs()))


def perceptual(run: JobRun, p: PerceptualDedupParams) -> None:
    from curate.perceptual.job import check_perceptual_dedup, run_perceptual_dedup

    scores = check_perceptual_dedup(run.ds, p.radius, p.hash, p.bands, p.embeddings)
    uids = run.input_uids()
    echo_result(run_perceptual_dedup(run.ds, run=run.name, embeddings=scores.split("/", 1)[1] if scores else None,
                                     input_uids=uids, executor=run.executor(), output=run.output,
                                     **p.job_kwargs()))


def register(app: typer.Typer) -> None:
    dedup = typer.Typer(help="Remove duplicates: semantic (SemDeDup), exact (image sha256), near (embedding cosine), "
                        "perceptual (image hash within a Hamming radius).",
                        no_args_is_help=True)
    app.add_typer(dedup, name="dedup")
    dedup.command("semantic")(job_command(
        SemDeDupParams, semantic, common=Common("semdedup"), app_name="curate-dedup-semantic",
        help="SemDeDup within each k-means cluster (Spark groups by cluster; blocked matrix products)."))
    dedup.command("exact")(job_command(
        ExactDedupParams, exact, common=Common("exact_dedup", dataset_help="Dataset folder or URI (holds downloads/)."),
        app_name="curate-dedup-exact",
        help="Keep one sample (smallest uid) per identical image (sha256 of the downloaded bytes)."))
    dedup.command("near")(job_command(
        NearDedupParams, near, common=Common("near_dedup"), app_name="curate-dedup-near",
        help="Group samples linked by embedding cosine >= threshold (FAISS range search); keep one per group."))
    dedup.command("perceptual")(job_command(
        PerceptualDedupParams, perceptual, app_name="curate-dedup-perceptual",
        common=Common("perceptual_dedup", dataset_help="Dataset folder or URI (downloaded image shards, or a "
                      "phashes table)."),
        help="Group images whose perceptual hashes are within --radius (multi-index hashing); keep one per group."))
