"""The coverage job: per-concept counts in the pool and in each subset, by caption match and
(where embeddings exist) by image-to-concept-prompt similarity and by both together.

Tasks run on any executor: a caption task reads one ``samples`` shard, an image task one
``embeddings/<model>`` shard. Captions only: each yields per-concept partial sums
(concept_id, source, population, count) plus one size row per population (concept_id -1),
summed by key (``sum_task_rows``). With images: each yields one row per pool sample (its
matched concept ids, its populations as bits), shuffled by uid bucket (``grouped_apply``),
and every bucket returns the same kind of counts for caption, image and caption+image. The
driver only receives per-concept counts; it then ranks, computes the relative drops, joins
per-class accuracy from evaluations and writes ``coverage/<name>``.

Population membership is read by each task for its own uid range: a subset's sorted
``uids.parquet`` filtered to [first, last] uid of the shard (row-group statistics prune the
rest), the ``downloads`` table filtered the same way plus ``status == 'success'``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from curate.coverage.concepts import ConceptList
from curate.coverage.counting import (BOTH, CAPTION, CONCEPTS_FILE, COUNT_SCHEMA, DEFAULT_MIN_POOL_COUNT, IMAGE,
                                      MATCH_ROWS, MAX_SUBSETS_WITH_BOTH, POOL, PROMPTS_FILE, SIZE_ID, TABLE,
                                      BucketCounts, coverage_counts_task, coverage_match_rows_task)
from curate.coverage.table import (build_table, evaluation_files, ordinal_rank,  # noqa: F401 - re-exported
                                   per_class_accuracy, rank_correlation, relative_drop, starved)
from curate import storage
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.tables import Dataset, atomic_write_bytes


def population_spec(dataset: Dataset, pool: str) -> tuple[dict, str]:
    """(task spec, description) of the pool: ``all`` samples, ``downloaded`` ones, ``auto``
    (downloaded when a downloads table exists, as the report does) or ``subset:NAME``."""
    from curate.subset import subset_dir

    if pool == "auto":
        pool = "downloaded" if dataset.has_table("downloads") else "all"
    if pool == "all":
        return {"kind": "all"}, "all samples"
    if pool == "downloaded":
        if not dataset.has_table("downloads"):
            raise DatasetError(f"{dataset.root} has no downloads table; use --pool all or run `curate download`")
        return {"kind": "downloaded", "root": str(dataset.root)}, "downloaded samples"
    if pool.startswith("subset:") and len(pool) > 7:
        p = storage.join(subset_dir(dataset, pool[7:]), "uids.parquet")
        if not storage.is_file(p):
            raise DatasetError(f"pool subset {pool[7:]!r} not found ({p})")
        return {"kind": "uids", "path": str(p)}, f"subset {pool[7:]}"
    raise DatasetError(f"--pool must be all, downloaded, auto or subset:NAME, got {pool!r}")


def subset_uids_path(dataset: Dataset, name: str) -> str:
    from curate.subset import list_subsets, subset_dir

    p = storage.join(subset_dir(dataset, name), "uids.parquet")
    if not storage.is_file(p):
        raise DatasetError(f"subset {name!r} not found in {dataset.path('subsets')} "
                           f"(have: {', '.join(list_subsets(dataset)) or 'none'})")
    return str(p)


def concept_prompt_embeddings(concepts: ConceptList, model_spec: str, dataset: Dataset, templates=None,
                              device: str = "cpu") -> tuple[np.ndarray, dict]:
    """One L2-normalised text embedding per concept: the mean of its prompt embeddings over
    the templates (``curate eval``'s zero-shot class weights), with the model that made the
    embeddings table (the one model resolver)."""
    from curate.embed.core import embed_texts
    from curate.evaluate import class_embeddings, load_templates
    from curate.models import load_model
    from curate.models.resolve import resolve_model

    ref = resolve_model(model_spec, dataset=dataset)
    bundle = load_model(ref.name, ref.pretrained, device=device, seed=ref.seed)
    tmpl = load_templates(templates)
    prompts = [t.format(c) for c in concepts.names for t in tmpl]
    w = class_embeddings(embed_texts(bundle, prompts), len(concepts.names), len(tmpl)).astype(np.float32)
    return w, {"model": ref.name, "pretrained": ref.pretrained, "seed": ref.seed, "templates": len(tmpl)}


def run_coverage(dataset: Dataset, concepts: ConceptList, executor, *, name: str,
                 subsets: dict[str, str] | None = None, pool: str = "auto", embeddings: str | None = None,
                 threshold: float | None = None, templates=None, min_pool_count: int = DEFAULT_MIN_POOL_COUNT,
                 accuracy_files: dict[str, list[str]] | None = None, batch_size: int = 65536,
                 device: str = "cpu", params: dict | None = None) -> dict:
    """Count every concept in the pool and in each subset; write ``coverage/<name>``, its
    plots and summary. ``subsets``: label -> uids.parquet path. Returns the summary."""
    from curate.manifest import code_version

    subsets = dict(subsets or {})
    if POOL in subsets:
        raise DatasetError(f"a subset cannot be labelled {POOL!r} in a coverage run")
    if not dataset.has_table("samples"):
        raise DatasetError(f"{dataset.root} has no samples table; run `curate ingest` first")
    table_name = f"{TABLE}/{name}"
    out_dir = dataset.table_dir(table_name)
    pool_task, pool_label = population_spec(dataset, pool)
    manifest = RunManifest("coverage", dict(params or {}, name=name, pool=pool, embeddings=embeddings,
                                            threshold=threshold, min_pool_count=min_pool_count,
                                            subsets=sorted(subsets), concepts=concepts.describe()))
    common = {"pool": pool_task, "subsets": [{"label": k, "path": v} for k, v in sorted(subsets.items())],
              "num_concepts": len(concepts.names), "batch_size": batch_size}
    tasks = _caption_tasks(dataset, concepts, common, out_dir)
    sources = [CAPTION]
    model_info = None
    if embeddings is not None:
        image_tasks, model_info = _image_tasks(dataset, concepts, embeddings, threshold, templates, device, common,
                                               out_dir, manifest)
        tasks += image_tasks
        sources += [IMAGE, BOTH]
    labels = [POOL] + sorted(subsets)
    n = len(concepts.names)
    with manifest.stage("count"):
        tasks, counts, sizes = _count(executor, tasks, embeddings is not None, sources, labels, n)
    with manifest.stage("accuracy"):
        accuracy, acc_info = _accuracy(dataset, concepts, sorted(subsets), accuracy_files or {})
    table = build_table(concepts, counts, sizes, sources, sorted(subsets), accuracy)
    dataset.write_table(table_name, table, schema=TABLE)

    summary: dict = {"name": name, "table": table_name, "concepts": concepts.describe(), "pool": pool_label,
                     "sources": {}, "min_pool_count": min_pool_count, "threshold": threshold,
                     "embeddings": embeddings, "prompt_model": model_info}
    for source in sources:
        summary["sources"][source] = _source_summary(table, source, counts, sizes, sorted(subsets), accuracy,
                                                     acc_info, min_pool_count)
    with manifest.stage("plots"):
        files = _write_plots(table, summary, out_dir, bool(accuracy))
    summary["plots"] = {k: storage.basename(v) for k, v in files.items()}
    dataset.write_json(f"{table_name}/_summary.json", summary)
    manifest["inputs"] = [{"table": "samples", "shards": len(dataset.shards("samples"))}, concepts.describe()]
    if embeddings:
        manifest["inputs"].append({"table": f"embeddings/{embeddings}",
                                   "shards": len(dataset.shards(f"embeddings/{embeddings}"))})
    manifest["counts"] = {"tasks": len(tasks), "concepts": n, "rows": table.num_rows,
                          **{f"{s}_pool_size": sizes[(s, POOL)] for s in sources},
                          "engine": getattr(executor, "name", "?")}
    manifest["outputs"] = {"table": table_name, **files, "summary": f"{table_name}/_summary.json"}
    manifest["code"] = code_version()
    manifest.write(dataset, f"coverage-{name}")
    return summary


def _caption_tasks(dataset: Dataset, concepts: ConceptList, common: dict, out_dir: Path | str) -> list[dict]:
    """One caption task per ``samples`` shard; the concept list is written where every worker reads it."""
    concepts_path = storage.join(out_dir, CONCEPTS_FILE)
    atomic_write_bytes(concepts_path, json.dumps(concepts.names, ensure_ascii=False).encode())
    sha = concepts.sha256()
    return [dict(common, source=CAPTION, input=str(p), concepts=str(concepts_path), concepts_sha=sha)
            for p in dataset.shards("samples")]


def _image_tasks(dataset: Dataset, concepts: ConceptList, embeddings: str, threshold: float | None, templates,
                 device: str, common: dict, out_dir: Path | str, manifest: RunManifest) -> tuple[list[dict], dict]:
    """One image task per embeddings shard, with the concept prompt embeddings they compare to."""
    if threshold is None:
        raise DatasetError("image matching needs a similarity threshold (--threshold)")
    table = f"embeddings/{embeddings}"
    if not dataset.has_table(table):
        raise DatasetError(f"table {table} not found in {dataset.root}")
    with manifest.stage("concept_prompts"):
        weights, model_info = concept_prompt_embeddings(concepts, embeddings, dataset, templates, device)
        buf = io.BytesIO()
        np.save(buf, weights)
        atomic_write_bytes(storage.join(out_dir, PROMPTS_FILE), buf.getvalue())
        wsha = hashlib.sha256(buf.getvalue()).hexdigest()
    weights_path = str(storage.join(out_dir, PROMPTS_FILE))
    tasks = [dict(common, source=IMAGE, input=str(p), weights=weights_path, weights_sha=wsha,
                  threshold=float(threshold)) for p in dataset.shards(table)]
    return tasks, model_info


def _count(executor, tasks: list[dict], with_images: bool, sources: list[str], labels: list[str],
           n: int) -> tuple[list[dict], dict, dict]:
    """Per (source, population): concept counts and population size, summed by the executor."""
    if not with_images:  # per-task partial sums, summed by key
        summed = executor.sum_task_rows(tasks, coverage_counts_task, COUNT_SCHEMA,
                                        ["concept_id", "source", "population"], "count", 0)
    else:  # per-sample match rows shuffled by uid bucket, so caption and image meet
        if len(labels) > MAX_SUBSETS_WITH_BOTH:
            raise DatasetError(f"at most {MAX_SUBSETS_WITH_BOTH - 1} subsets in one run with --embeddings")
        buckets = max(1, min(1024, len(tasks)))
        tasks = [dict(t, buckets=buckets) for t in tasks]
        parts = executor.grouped_apply(tasks, coverage_match_rows_task, MATCH_ROWS, "bucket",
                                       BucketCounts(n, labels), COUNT_SCHEMA)
        summed = parts.group_by(["concept_id", "source", "population"]).aggregate([("count", "sum")]) \
            .rename_columns(["concept_id", "source", "population", "count"])
    counts = {(s, lab): np.zeros(n, np.int64) for s in sources for lab in labels}
    sizes = {(s, lab): 0 for s in sources for lab in labels}
    for cid, s, lab, c in zip(summed.column("concept_id").to_pylist(), summed.column("source").to_pylist(),
                              summed.column("population").to_pylist(), summed.column("count").to_pylist()):
        if cid == SIZE_ID:
            sizes[(s, lab)] = int(c)
        else:
            counts[(s, lab)][cid] = int(c)
    return tasks, counts, sizes


def _accuracy(dataset: Dataset, concepts: ConceptList, subsets: list[str],
              accuracy_files: dict[str, list[str]]) -> tuple[dict, dict]:
    """Per subset: mean per-class accuracy by concept id from its evaluations, and which were used."""
    accuracy, acc_info = {}, {}
    for sub in subsets:
        files = list(accuracy_files.get(sub, []))
        files += [f for f in evaluation_files(dataset, sub) if f not in files]
        if files:
            accuracy[sub], acc_info[sub] = per_class_accuracy(concepts, files)
    return accuracy, acc_info


def _source_summary(table, source: str, counts: dict, sizes: dict, subsets: list[str], accuracy: dict,
                    acc_info: dict, min_pool_count: int) -> dict:
    """One source's summary: pool coverage, and per subset what it kept, lost and starved."""
    pc_ = counts[(source, POOL)]
    entry = {"pool_size": sizes[(source, POOL)], "concepts_seen": int((pc_ > 0).sum()),
             "matches": int(pc_.sum()), "subsets": {}}
    for sub in subsets:
        acc = accuracy.get(sub, {})
        ids = sorted(acc)
        entry["subsets"][sub] = {
            "size": sizes[(source, sub)], "concepts_seen": int((counts[(source, sub)] > 0).sum()),
            "concepts_lost": int(((pc_ > 0) & (counts[(source, sub)] == 0)).sum()),
            "starved": starved(table, source, sub, min_pool_count),
            "accuracy": {"classes": len(ids), "evaluations": acc_info.get(sub, {}).get("files", []),
                         "spearman_count": rank_correlation([float(counts[(source, sub)][i]) for i in ids],
                                                            [acc[i] for i in ids])} if ids else None,
        }
    return entry


def _write_plots(table, summary: dict, out_dir: Path | str, with_accuracy: bool) -> dict:
    from curate.coverage import plots

    png = plots.long_tail_png(table)
    files = {"long_tail": str(storage.join(out_dir, "_longtail.png"))}
    atomic_write_bytes(files["long_tail"], png)
    if with_accuracy:
        files["accuracy"] = str(storage.join(out_dir, "_accuracy.png"))
        atomic_write_bytes(files["accuracy"], plots.accuracy_png(table, summary))
    return files
