"""``curate coverage``: concept frequencies in the pool and in subsets (the long tail, the
concepts a curation step starved, per-class accuracy against frequency)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, open_executor, require_tables
from curate.models.resolve import model_spec_callback
from curate.names import check_name, name_callback


def load_concepts(concepts: Optional[str], eval_folder: Optional[str], metadata: Optional[str]):
    """The concept list from exactly one of the three sources (errors name file and line)."""
    from curate.coverage.concepts import from_eval_folder, from_file, from_metadata
    from curate.errors import CurateError

    given = [x for x in (concepts, eval_folder, metadata) if x]
    if len(given) != 1:
        raise CurateError("give exactly one concept source: --concepts FILE, --eval FOLDER or --metadata FILE")
    if concepts:
        return from_file(concepts)
    if eval_folder:
        return from_eval_folder(eval_folder)
    return from_metadata(metadata)


def default_name(source: str) -> str:
    """The table name from the concept source: its file stem or folder name."""
    import re

    p = Path(source)
    stem = p.name if p.is_dir() else p.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "concepts"


def echo_summary(summary: dict) -> None:
    out = typer.echo
    c = summary["concepts"]
    out(f"coverage {summary['name']}: {c['concepts']:,} concepts ({c['kind']}: {c['source']}), "
        f"pool = {summary['pool']} -> {summary['table']}")
    for source, s in summary["sources"].items():
        out(f"  {source}: pool {s['pool_size']:,} samples, {s['concepts_seen']:,} concepts seen, "
            f"{s['matches']:,} concept matches")
        for sub, d in s["subsets"].items():
            out(f"    subset {sub}: {d['size']:,} samples, {d['concepts_seen']:,} concepts seen, "
                f"{d['concepts_lost']:,} lost")
            if d["starved"]:
                top = ", ".join(f"{r['concept']} ({r['pool_count']:,} -> {r['count']:,}, drop {r['relative_drop']:+.2f})"
                                for r in d["starved"][:5])
                out(f"      most starved (pool count >= {summary['min_pool_count']}): {top}")
            acc = d.get("accuracy")
            if acc:
                rho = acc["spearman_count"]
                out(f"      accuracy vs frequency: {acc['classes']} classes, Spearman rho "
                    f"{'n/a' if rho is None else f'{rho:+.3f}'}")
    out(f"  plots: {', '.join(summary['plots'].values())} in {summary['table']}/")


def register(app: typer.Typer) -> None:
    @app.command("coverage")
    def coverage_cmd(
        dataset: str = typer.Argument(..., help="Dataset folder with a samples table."),
        concepts: Optional[str] = typer.Option(None, "--concepts", help="Concept list: one concept a line (also "
                                               "ImageNet synset lines 'n01440764 tench, ...' and WordNet names "
                                               "'hot_dog.n.01'), or a .csv/.tsv with a concept column."),
        eval_folder: Optional[str] = typer.Option(None, "--eval", help="An eval set FOLDER/<class>/: its class names."),
        metadata: Optional[str] = typer.Option(None, "--metadata", help="MetaCLIP metadata JSON: its entries, as is."),
        subset: List[str] = typer.Option([], "--subset", "-s", help="Subset to count in (repeatable).",
                                         callback=name_callback),
        pool: str = typer.Option("auto", "--pool", help="The population subsets are compared with: all, downloaded, "
                                 "subset:NAME, or auto (downloaded when a downloads table exists, else all)."),
        embeddings: Optional[str] = typer.Option(None, "--embeddings", help="Also count by image: embeddings table id "
                                                 "(or model spec) whose image embeddings are compared with the concept "
                                                 "prompts' text embeddings.", callback=model_spec_callback),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="Image match: cosine of image and concept "
                                                  "prompt embeddings at least this (needs --embeddings)."),
        templates: Optional[str] = typer.Option(None, "--templates", help="Prompt templates for image matching: "
                                                "default, openai, simple or a file (as curate eval)."),
        min_pool_count: int = typer.Option(20, "--min-pool-count", min=0, help="Starved concepts: only those with at "
                                           "least this many pool samples (so noise does not dominate)."),
        accuracy: List[str] = typer.Option([], "--accuracy", help="SUBSET=EVAL_JSON: per-class accuracy of a model "
                                           "trained on SUBSET (curate eval output), repeatable; those the subset's "
                                           "manifest lists are added."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Table name: coverage/NAME (default: the "
                                             "concept file's stem or eval folder's name).", callback=name_callback),
        device: str = typer.Option("cpu", "--device", help="Device for the concept prompt embeddings."),
        batch_size: int = typer.Option(65536, "--batch-size", help="Rows per Arrow batch inside a task."),
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: List[str] = ConfOpt,
    ) -> None:
        """Count concepts (eval class names, a concept list or MetaCLIP entries) in the pool and in
        each subset: captions with the MetaCLIP matcher, images by prompt similarity.

        Writes coverage/NAME (queryable: curate sql DATASET "SELECT * FROM coverage_NAME"), the
        long-tail plot and _summary.json beside it; the report shows a coverage section.
        """
        from curate.coverage.job import population_spec, run_coverage, subset_uids_path
        from curate.errors import CurateError
        from curate.lock import hold_dataset_lock
        from curate.tables import Dataset

        # everything is checked before any engine starts
        require_tables(dataset, {"samples": "curate ingest"})
        ds = Dataset(dataset)
        cl = load_concepts(concepts, eval_folder, metadata)
        name = output or default_name(cl.source)
        check_name(name, "--output")
        subsets = {s: subset_uids_path(ds, s) for s in subset}
        population_spec(ds, pool)
        if (embeddings is None) != (threshold is None):
            raise CurateError("image matching needs both --embeddings and --threshold")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise CurateError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
        emb_id = None
        if embeddings is not None:
            from curate.evaluate import load_templates
            from curate.models.resolve import resolve_embeddings, resolve_model

            emb_id = resolve_embeddings(ds, embeddings)
            resolve_model(emb_id, dataset=ds)  # the model that made them is known (no weights loaded)
            load_templates(templates)
        acc_files: dict[str, list[str]] = {}
        for item in accuracy:
            sub, sep, path = item.partition("=")
            if not sep or not path:
                raise CurateError(f"--accuracy expects SUBSET=EVAL_JSON, got {item!r}")
            if sub not in subsets:
                raise CurateError(f"--accuracy {item}: subset {sub!r} is not one of the --subset names")
            if not Path(path).is_file():
                raise CurateError(f"--accuracy {item}: {path} does not exist")
            acc_files.setdefault(sub, []).append(path)
        hold_dataset_lock(dataset)  # one writer per dataset
        executor = open_executor(engine, master, conf, "curate-coverage", dataset=dataset)
        summary = run_coverage(ds, cl, executor, name=name, subsets=subsets, pool=pool, embeddings=emb_id,
                               threshold=threshold, templates=templates, min_pool_count=min_pool_count,
                               accuracy_files=acc_files, batch_size=batch_size, device=device,
                               params={"engine": engine, "master": master})
        echo_summary(summary)
