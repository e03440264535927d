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
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curate.coverage.concepts import ConceptList
from curate.engine import worker_cache
from curate.errors import DatasetError, InputFileError
from curate.manifest import RunManifest
from curate.metaclip.matching import Matcher, load_metadata
from curate.tables import Dataset, atomic_write_bytes, load_schema

TABLE = "coverage"
POOL = "pool"
SIZE_ID = -1  # concept_id of a population's size row
CAPTION, IMAGE = "caption", "image"
COUNT_SCHEMA = pa.schema([("concept_id", pa.int32()), ("source", pa.string()),
                          ("population", pa.string()), ("count", pa.int64())])
CONCEPTS_FILE = "_concepts.json"
PROMPTS_FILE = "_concept_embeddings.npy"
DEFAULT_MIN_POOL_COUNT = 20
STARVED_K = 10
_MAX_SIMILARITIES = 1 << 24  # image x concept cosines held at once in a task (64 MiB of float32)


# ---------------------------------------------------------------- populations (inside tasks)
def _uid_range_filter(lo: str, hi: str):
    return (pc.field("uid") >= lo) & (pc.field("uid") <= hi)


def _population_uids(spec: dict, lo: str, hi: str) -> pa.Array | None:
    """uids of a population within [lo, hi]; None means every row (the whole pool)."""
    kind = spec["kind"]
    if kind == "all":
        return None
    if kind == "uids":
        t = pads.dataset(spec["path"], format="parquet").to_table(columns=["uid"], filter=_uid_range_filter(lo, hi))
        return t.column("uid").combine_chunks()
    if kind == "downloaded":
        files = [str(p) for p in Dataset(spec["root"]).shards("downloads")]
        t = pads.dataset(files, format="parquet").to_table(
            columns=["uid"], filter=_uid_range_filter(lo, hi) & (pc.field("status") == "success"))
        return t.column("uid").combine_chunks()
    raise ValueError(f"unknown population kind {kind!r}")


def _masks(task: dict, uids: pa.Array) -> dict[str, np.ndarray]:
    """Per population label, which of ``uids`` belong to it (subsets within the pool)."""
    if len(uids) == 0:
        return {}
    lo, hi = pc.min(uids).as_py(), pc.max(uids).as_py()
    pool_uids = _population_uids(task["pool"], lo, hi)
    pool = np.ones(len(uids), bool) if pool_uids is None else \
        pc.is_in(uids, value_set=pool_uids).to_numpy(zero_copy_only=False)
    out = {POOL: pool}
    for s in task["subsets"]:
        member = pc.is_in(uids, value_set=_population_uids({"kind": "uids", "path": s["path"]}, lo, hi))
        out[s["label"]] = member.to_numpy(zero_copy_only=False)
    return out


def _concept_matcher(path: str, sha: str) -> Matcher:
    return worker_cache(("curate.coverage.Matcher", path, sha), lambda: Matcher(load_metadata(path)))


def _concept_weights(path: str, sha: str) -> np.ndarray:
    return worker_cache(("curate.coverage.weights", path, sha), lambda: np.load(path))


def _rows(source: str, totals: dict[str, np.ndarray], sizes: dict[str, int]) -> pa.RecordBatch:
    ids, pops, counts = [], [], []
    for label, c in totals.items():
        nz = np.flatnonzero(c)
        ids.append(nz.astype(np.int32))
        pops += [label] * len(nz)
        counts.append(c[nz].astype(np.int64))
        ids.append(np.array([SIZE_ID], np.int32))
        pops.append(label)
        counts.append(np.array([sizes[label]], np.int64))
    return pa.record_batch([pa.array(np.concatenate(ids) if ids else np.zeros(0, np.int32)),
                            pa.array([source] * len(pops), pa.string()), pa.array(pops, pa.string()),
                            pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int64))],
                           schema=COUNT_SCHEMA)


def _shard_matches(task: dict) -> Iterator[tuple[pa.Array, dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Per batch of one shard: (uids, population masks, row, concept) where each (row,
    concept) pair is a match of the task's source (caption substring, or image-prompt cosine
    at or above the threshold). Subset masks are already restricted to the pool."""
    path = Path(task["input"])
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputFileError(str(path), f"cannot read Parquet shard ({e})") from None
    source = task["source"]
    column = "text" if source == CAPTION else "image_embedding"
    missing = [c for c in ("uid", column) if c not in pf.schema_arrow.names]
    if missing:
        raise InputFileError(str(path), f"missing column(s) {', '.join(missing)}")
    n = task["num_concepts"]
    # membership is read once per shard for the shard's whole uid range
    masks_all = _masks(task, pf.read(columns=["uid"]).column("uid").combine_chunks())
    masks_all = {k: (v & masks_all[POOL]) for k, v in masks_all.items()}
    if source == CAPTION:
        matcher = _concept_matcher(task["concepts"], task["concepts_sha"])
    else:
        weights = _concept_weights(task["weights"], task["weights_sha"])
        threshold = np.float32(task["threshold"])
    offset = 0
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["uid", column]):
        m = b.num_rows
        masks = {k: v[offset:offset + m] for k, v in masks_all.items()}
        offset += m
        if source == CAPTION:
            ids = matcher.match_array(b.column("text"))
            rows = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False).astype(np.int64)
            concepts = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            col = b.column(column)
            emb = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(m, col.type.list_size)
            if emb.shape[1] != weights.shape[1]:
                raise DatasetError(f"{path}: image embeddings have {emb.shape[1]} dimensions, the concept "
                                   f"prompts {weights.shape[1]} (another model?)")
            step = max(1, _MAX_SIMILARITIES // max(1, n))  # rows per product: bounded memory for long lists
            rows_l, concepts_l = [], []
            for a in range(0, m, step):
                r, c = np.nonzero((emb[a:a + step] @ weights.T) >= threshold)  # [rows, concepts]
                rows_l.append(r.astype(np.int64) + a)
                concepts_l.append(c.astype(np.int64))
            rows = np.concatenate(rows_l) if rows_l else np.zeros(0, np.int64)
            concepts = np.concatenate(concepts_l) if concepts_l else np.zeros(0, np.int64)
        yield b.column("uid"), masks, rows, concepts


def coverage_counts_task(task: dict) -> Iterator[pa.RecordBatch]:
    """Per-concept counts of one shard, for the pool and every subset (partial sums)."""
    n = task["num_concepts"]
    labels = [POOL] + [s["label"] for s in task["subsets"]]
    totals = {lab: np.zeros(n, np.int64) for lab in labels}
    sizes = dict.fromkeys(labels, 0)
    for _, masks, rows, concepts in _shard_matches(task):
        for lab in labels:
            sizes[lab] += int(masks[lab].sum())
            totals[lab] += np.bincount(concepts[masks[lab][rows]], minlength=n)[:n]
    yield _rows(task["source"], totals, sizes)


# ---------------------------------------------------------------- caption and image together
# A concept counted in both the caption and the image of one sample (Udandarao et al.'s
# "matched" frequency) needs each sample's two match sets side by side: tasks emit one row per
# pool sample and source (its matched concept ids, its populations as bits), the executor
# shuffles them by a uid bucket (grouped_apply), and each bucket returns per-concept counts.
BOTH = "caption+image"
MATCH_ROWS = pa.schema([("bucket", pa.int32()), ("uid", pa.string()), ("source", pa.string()),
                        ("ids", pa.list_(pa.int32())), ("populations", pa.int64())])
MAX_SUBSETS_WITH_BOTH = 62  # populations travel as bits of an int64 (bit 0: the pool)


def coverage_match_rows_task(task: dict) -> Iterator[pa.RecordBatch]:
    """One row per pool sample of the shard: its matched concept ids and population bits."""
    labels = [POOL] + [s["label"] for s in task["subsets"]]
    buckets = task["buckets"]
    for uids, masks, rows, concepts in _shard_matches(task):
        pool = masks[POOL]
        if not pool.any():
            continue
        bits = np.zeros(len(uids), np.int64)
        for j, lab in enumerate(labels):
            bits |= masks[lab].astype(np.int64) << j
        keep = np.flatnonzero(pool)
        remap = np.full(len(uids), -1, np.int64)
        remap[keep] = np.arange(len(keep))
        sel = pool[rows]
        offsets = np.zeros(len(keep) + 1, np.int32)
        np.cumsum(np.bincount(remap[rows[sel]], minlength=len(keep)), out=offsets[1:])
        kept_uids = uids.take(pa.array(keep))
        head = np.array([int(u[:8], 16) for u in kept_uids.to_pylist()], np.int64)  # uids are hex
        yield pa.record_batch([pa.array((head % buckets).astype(np.int32)), kept_uids,
                               pa.array([task["source"]] * len(keep), pa.string()),
                               pa.ListArray.from_arrays(pa.array(offsets), pa.array(concepts[sel].astype(np.int32))),
                               pa.array(bits[keep])], schema=MATCH_ROWS)


def bucket_counts(rows: pa.Table, num_concepts: int, labels: list[str]) -> pa.Table:
    """Per-concept counts of one uid bucket for caption, image and both, with size rows."""
    n = num_concepts
    uid_idx = pc.dictionary_encode(rows.column("uid").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    n_uids = int(uid_idx.max()) + 1 if len(uid_idx) else 0
    bits = np.zeros(n_uids, np.int64)
    bits[uid_idx] = rows.column("populations").to_numpy()
    source = rows.column("source").to_numpy(zero_copy_only=False)
    ids = rows.column("ids").combine_chunks()
    parent = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    keys, present = {}, {}
    for s in (CAPTION, IMAGE):
        is_s = source == s
        present[s] = np.zeros(n_uids, bool)
        present[s][uid_idx[is_s]] = True
        on = is_s[parent]
        keys[s] = np.unique(uid_idx[parent[on]].astype(np.int64) * n + flat[on])
    keys[BOTH] = np.intersect1d(keys[CAPTION], keys[IMAGE], assume_unique=True)
    present[BOTH] = present[CAPTION] & present[IMAGE]
    out = []
    for s in (CAPTION, IMAGE, BOTH):
        u, c = keys[s] // n, keys[s] % n
        totals, sizes = {}, {}
        for j, lab in enumerate(labels):
            member = (bits >> j) & 1 == 1
            totals[lab] = np.bincount(c[member[u]], minlength=n)[:n]
            sizes[lab] = int((member & present[s]).sum())
        out.append(_rows(s, totals, sizes))
    return pa.Table.from_batches(out, schema=COUNT_SCHEMA)


class _BucketCounts:
    """``bucket_counts`` with its parameters bound (picklable for Spark workers)."""

    def __init__(self, num_concepts: int, labels: list[str]):
        self.num_concepts, self.labels = num_concepts, labels

    def __call__(self, rows: pa.Table) -> pa.Table:
        return bucket_counts(rows, self.num_concepts, self.labels)


# ---------------------------------------------------------------- driver
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
        p = subset_dir(dataset, pool[7:]) / "uids.parquet"
        if not p.is_file():
            raise DatasetError(f"pool subset {pool[7:]!r} not found ({p})")
        return {"kind": "uids", "path": str(p)}, f"subset {pool[7:]}"
    raise DatasetError(f"--pool must be all, downloaded, auto or subset:NAME, got {pool!r}")


def subset_uids_path(dataset: Dataset, name: str) -> str:
    from curate.subset import list_subsets, subset_dir

    p = subset_dir(dataset, name) / "uids.parquet"
    if not p.is_file():
        raise DatasetError(f"subset {name!r} not found in {dataset.root / 'subsets'} "
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


def ordinal_rank(counts: np.ndarray) -> np.ndarray:
    """1-based ranks by count, descending; ties by position (concept id)."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    rank = np.empty(len(counts), np.int32)
    rank[order] = np.arange(1, len(counts) + 1, dtype=np.int32)
    return rank


def relative_drop(count: np.ndarray, subset_size: int, pool_count: np.ndarray, pool_size: int) -> np.ndarray:
    """1 - subset share / pool share per concept; NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pool_share = pool_count / pool_size if pool_size else np.full(len(pool_count), np.nan)
        sub_share = count / subset_size if subset_size else np.full(len(count), np.nan)
        out = 1.0 - sub_share / pool_share
    out[(pool_count == 0) | (subset_size == 0)] = np.nan
    return out


def build_table(concepts: ConceptList, counts: dict[tuple[str, str], np.ndarray],
                sizes: dict[tuple[str, str], int], sources: list[str], subsets: list[str],
                accuracy: dict[str, dict[int, float]]) -> pa.Table:
    """The coverage table from the summed counts (see schemas/coverage.yaml)."""
    n = len(concepts.names)
    ids = np.arange(n, dtype=np.int32)
    parts = []
    for source in sources:
        pool_count = counts[(source, POOL)]
        pool_size = sizes[(source, POOL)]
        base = {"concept_id": pa.array(ids), "concept": pa.array(concepts.names, pa.string()),
                "source": pa.array([source] * n, pa.string()), "pool_count": pa.array(pool_count),
                "pool_size": pa.array(np.full(n, pool_size, np.int64)), "pool_rank": pa.array(ordinal_rank(pool_count))}
        for sub in (subsets or [None]):
            if sub is None:
                cols = {"subset": pa.nulls(n, pa.string()), "count": pa.nulls(n, pa.int64()),
                        "subset_size": pa.nulls(n, pa.int64()), "rank": pa.nulls(n, pa.int32()),
                        "kept_fraction": pa.nulls(n, pa.float64()), "relative_drop": pa.nulls(n, pa.float64()),
                        "accuracy": pa.nulls(n, pa.float64())}
            else:
                c = counts[(source, sub)]
                size = sizes[(source, sub)]
                with np.errstate(divide="ignore", invalid="ignore"):
                    kept = np.where(pool_count > 0, c / np.maximum(pool_count, 1), np.nan)
                acc = accuracy.get(sub, {})
                cols = {"subset": pa.array([sub] * n, pa.string()), "count": pa.array(c),
                        "subset_size": pa.array(np.full(n, size, np.int64)), "rank": pa.array(ordinal_rank(c)),
                        "kept_fraction": pa.array(kept, from_pandas=True),
                        "relative_drop": pa.array(relative_drop(c, size, pool_count, pool_size), from_pandas=True),
                        "accuracy": pa.array([acc.get(i) for i in range(n)], pa.float64())}
            parts.append(pa.table({**base, **cols}))
    return load_schema(TABLE).conform(pa.concat_tables(parts))


def starved(table: pa.Table, source: str, subset: str, min_pool_count: int, k: int = STARVED_K) -> list[dict]:
    """The k concepts whose share fell most in ``subset`` (relative drop above 0, descending;
    ties by concept id), among those with at least ``min_pool_count`` pool samples."""
    t = table.filter(pc.and_(pc.equal(table["source"], source), pc.equal(table["subset"], subset)))
    t = t.filter(pc.and_(pc.greater_equal(t["pool_count"], min_pool_count), pc.is_valid(t["relative_drop"])))
    rows = t.select(["concept_id", "concept", "pool_count", "count", "kept_fraction", "relative_drop"]).to_pylist()
    rows.sort(key=lambda r: (-r["relative_drop"], r["concept_id"]))
    return [r for r in rows if r["relative_drop"] > 0][:k]


# ---------------------------------------------------------------- evaluations
def evaluation_files(dataset: Dataset, subset: str) -> list[str]:
    """Results files of the evaluations a subset's manifest lists (``curate eval`` links them)."""
    from curate.subset import read_subset_manifest

    man = read_subset_manifest(dataset, subset)
    return [e["results"] for e in man.get("evaluations", []) if isinstance(e, dict) and e.get("results")
            and Path(e["results"]).is_file()]


def per_class_accuracy(concepts: ConceptList, files: list[str]) -> tuple[dict[int, float], dict]:
    """Mean per-class recall over evaluation files, by concept id, from each file's zero-shot
    set whose class names are the concepts (the eval folder's own set when the concepts came
    from one, else the set sharing the most class names)."""
    index = {name: i for i, name in enumerate(concepts.names)}
    sums: dict[int, list[float]] = {}
    used = []
    for f in files:
        try:
            res = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            raise InputFileError(str(f), f"cannot read evaluation results ({e})") from None
        sets = {k: v.get("per_class_recall") or {} for k, v in (res.get("zeroshot") or {}).items()
                if isinstance(v, dict)}
        if not sets:
            continue
        want = Path(concepts.source).name if concepts.kind == "eval" else None
        name = want if want in sets else max(sets, key=lambda k: (sum(c in index for c in sets[k]), k))
        hits = {index[c]: float(v) for c, v in sets[name].items() if c in index}
        if not hits:
            continue
        used.append({"results": str(f), "set": name, "classes": len(hits)})
        for i, v in hits.items():
            sums.setdefault(i, []).append(v)
    return {i: float(np.mean(v)) for i, v in sums.items()}, {"files": used}


def rank_correlation(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None with fewer than 3 points or no spread."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if rho is None or np.isnan(rho) else float(rho)


# ---------------------------------------------------------------- the job
def run_coverage(dataset: Dataset, concepts: ConceptList, executor, *, name: str,
                 subsets: dict[str, str] | None = None, pool: str = "auto", embeddings: str | None = None,
                 threshold: float | None = None, templates=None, min_pool_count: int = DEFAULT_MIN_POOL_COUNT,
                 accuracy_files: dict[str, list[str]] | None = None, batch_size: int = 65536,
                 device: str = "cpu", params: dict | None = None) -> dict:
    """Count every concept in the pool and in each subset; write ``coverage/<name>``, its
    plots and summary. ``subsets``: label -> uids.parquet path. Returns the summary."""
    from curate.coverage import plots
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
    concepts_path = out_dir / CONCEPTS_FILE
    atomic_write_bytes(concepts_path, json.dumps(concepts.names, ensure_ascii=False).encode())
    sha = concepts.sha256()
    subset_specs = [{"label": k, "path": v} for k, v in sorted(subsets.items())]
    common = {"pool": pool_task, "subsets": subset_specs, "num_concepts": len(concepts.names),
              "batch_size": batch_size}
    tasks = [dict(common, source=CAPTION, input=str(p), concepts=str(concepts_path), concepts_sha=sha)
             for p in dataset.shards("samples")]
    sources = [CAPTION]
    model_info = None
    if embeddings is not None:
        if threshold is None:
            raise DatasetError("image matching needs a similarity threshold (--threshold)")
        table = f"embeddings/{embeddings}"
        if not dataset.has_table(table):
            raise DatasetError(f"table {table} not found in {dataset.root}")
        with manifest.stage("concept_prompts"):
            weights, model_info = concept_prompt_embeddings(concepts, embeddings, dataset, templates, device)
            buf = io.BytesIO()
            np.save(buf, weights)
            atomic_write_bytes(out_dir / PROMPTS_FILE, buf.getvalue())
            wsha = hashlib.sha256(buf.getvalue()).hexdigest()
        tasks += [dict(common, source=IMAGE, input=str(p), weights=str(out_dir / PROMPTS_FILE), weights_sha=wsha,
                       threshold=float(threshold)) for p in dataset.shards(table)]
        sources += [IMAGE, BOTH]
    labels = [POOL] + sorted(subsets)
    n = len(concepts.names)
    with manifest.stage("count"):
        if embeddings is None:  # per-task partial sums, summed by key
            summed = executor.sum_task_rows(tasks, coverage_counts_task, COUNT_SCHEMA,
                                            ["concept_id", "source", "population"], "count", 0)
        else:  # per-sample match rows shuffled by uid bucket, so caption and image meet
            if len(labels) > MAX_SUBSETS_WITH_BOTH:
                raise DatasetError(f"at most {MAX_SUBSETS_WITH_BOTH - 1} subsets in one run with --embeddings")
            buckets = max(1, min(1024, len(tasks)))
            tasks = [dict(t, buckets=buckets) for t in tasks]
            parts = executor.grouped_apply(tasks, coverage_match_rows_task, MATCH_ROWS, "bucket",
                                           _BucketCounts(n, labels), COUNT_SCHEMA)
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
    with manifest.stage("accuracy"):
        accuracy, acc_info = {}, {}
        for sub in sorted(subsets):
            files = list((accuracy_files or {}).get(sub, []))
            files += [f for f in evaluation_files(dataset, sub) if f not in files]
            if files:
                accuracy[sub], acc_info[sub] = per_class_accuracy(concepts, files)
    table = build_table(concepts, counts, sizes, sources, sorted(subsets), accuracy)
    dataset.write_table(table_name, table, schema=TABLE)

    summary: dict = {"name": name, "table": table_name, "concepts": concepts.describe(), "pool": pool_label,
                     "sources": {}, "min_pool_count": min_pool_count, "threshold": threshold,
                     "embeddings": embeddings, "prompt_model": model_info}
    for source in sources:
        pc_ = counts[(source, POOL)]
        entry = {"pool_size": sizes[(source, POOL)], "concepts_seen": int((pc_ > 0).sum()),
                 "matches": int(pc_.sum()), "subsets": {}}
        for sub in sorted(subsets):
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
        summary["sources"][source] = entry
    with manifest.stage("plots"):
        png = plots.long_tail_png(table)
        atomic_write_bytes(out_dir / "_longtail.png", png)
        files = {"long_tail": str(out_dir / "_longtail.png")}
        if accuracy:
            atomic_write_bytes(out_dir / "_accuracy.png", plots.accuracy_png(table, summary))
            files["accuracy"] = str(out_dir / "_accuracy.png")
    summary["plots"] = {k: Path(v).name for k, v in files.items()}
    dataset.write_json(f"{table_name}/_summary.json", summary)
    manifest["inputs"] = [{"table": "samples", "shards": len(dataset.shards("samples"))}, concepts.describe()]
    if embeddings:
        emb_table = f"embeddings/{embeddings}"
        manifest["inputs"].append({"table": emb_table, "shards": len(dataset.shards(emb_table))})
    manifest["counts"] = {"tasks": len(tasks), "concepts": n, "rows": table.num_rows,
                          **{f"{s}_pool_size": sizes[(s, POOL)] for s in sources},
                          "engine": getattr(executor, "name", "?")}
    manifest["outputs"] = {"table": table_name, **files, "summary": f"{table_name}/_summary.json"}
    manifest["code"] = code_version()
    manifest.write(dataset, f"coverage-{name}")
    return summary
