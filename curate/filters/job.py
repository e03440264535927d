"""The filter job: text stats, pool-wide thresholds and clusters, one decision per sample and filter.

Steps (each timed in the run manifest):
1. ``text_stats``: per samples shard (a task each), fastText language + word/char/token
   counts, written row-aligned as ``text_stats`` shard i; current shards are skipped.
2. ``prepare``: what needs the whole pool: a fraction's exact threshold (radix select over
   the embeddings shards), image_based k-means over caption-filtered pool embeddings and the
   clusters of the target images, text_based target synsets.
3. ``decide``: samples + text_stats (per shard) left-joined with the embeddings columns the
   filters need, every filter decides every row; ``decisions/<run>`` sorted by (uid, stage).
4. ``subset``: uids every filter kept -> ``subsets/<run>`` (Parquet + DataComp .npy);
   counts per filter and reason -> ``_runs/filter-<run>.json``. Every filter must have decided
   every sample exactly once, or the job fails.
"""

from __future__ import annotations

import functools
import glob
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.decisions import decisions_table
from curate.errors import CurateError, DatasetError, InputFileError
from curate.filters import stages, text_stats
from curate.filters.frames import frames_for
from curate.filters.stages import FilterSpec, FilterSpecError
from curate.filters.threshold import top_fraction_threshold
from curate.manifest import RunManifest, file_fingerprint
from curate.names import check_name
from curate.selection import write_kept_subset
from curate.tables import Dataset, load_schema

SAMPLE_COLUMNS = ["uid", "original_width", "original_height"]
STAT_COLUMNS = ["language", "language_score", "word_count", "char_count", "token_count"]


# ---------------------------------------------------------------- frame readers (run in tasks)
def base_schema(with_text: bool, with_stats: bool = True) -> pa.Schema:
    fields = [pa.field("uid", pa.string()), pa.field("original_width", pa.int32()),
              pa.field("original_height", pa.int32())]
    if with_text:
        fields.append(pa.field("text", pa.string()))
    if not with_stats:
        return pa.schema(fields)
    ts = load_schema("text_stats").arrow()
    return pa.schema(fields + [ts.field(c).with_nullable(True) for c in STAT_COLUMNS])


def read_base(task: dict):
    """samples shard i beside text_stats shard i (same rows, same order); without text_stats
    when no filter of the run reads them (``stats_shard`` None)."""
    src, stats = task["samples_shard"], task["stats_shard"]
    cols = SAMPLE_COLUMNS + (["text"] if task["with_text"] else [])
    try:
        s = pq.read_table(src, columns=cols)
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(src, f"cannot read columns {', '.join(cols)} ({e})") from e
    schema = base_schema(task["with_text"], stats is not None)
    arrays = [s.column(c).cast(schema.field(c).type) for c in cols]
    if stats is not None:
        t = pq.read_table(stats, columns=["uid"] + STAT_COLUMNS)
        if t.num_rows != s.num_rows or not t.column("uid").equals(s.column("uid")):
            raise DatasetError(f"{stats} does not match {src} row for row; rerun with --recompute-stats")
        arrays += [t.column(c) for c in STAT_COLUMNS]
    yield from pa.Table.from_arrays(arrays, schema=schema).to_batches(max_chunksize=65536)


def emb_schema(j: int, with_embedding: bool) -> pa.Schema:
    fields = [pa.field("uid", pa.string()), pa.field(f"s{j}", pa.float32())]
    if with_embedding:
        fields.append(pa.field(f"e{j}", pa.binary()))
    return pa.schema(fields)


def read_embeddings(task: dict):
    """uid, clip_score (as s<j>) and optionally image_embedding as raw float16 bytes (e<j>)."""
    j, with_emb = task["j"], task["with_embedding"]
    cols = ["uid", "clip_score"] + (["image_embedding"] if with_emb else [])
    try:
        t = pq.read_table(task["path"], columns=cols)
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(task["path"], f"cannot read columns {', '.join(cols)} ({e})") from e
    arrays = [t.column("uid"), t.column("clip_score").cast(pa.float32())]
    if with_emb:
        from curate.embedding_space.vectors import check_finite, list_to_matrix

        check_finite(list_to_matrix(t.column("image_embedding"), f"{task['path']}: "), t.column("uid"),
                     f"{task['path']}: ", "image_embedding")
        arrays.append(stages.embeddings_to_binary(t.column("image_embedding")))
    yield from pa.Table.from_arrays(arrays, schema=emb_schema(j, with_emb)).to_batches(max_chunksize=65536)


def read_downloads(task: dict):
    t = pq.read_table(task["path"], columns=["uid", "original_width", "original_height"])
    yield from pa.Table.from_arrays(
        [t.column("uid"), t.column("original_width").cast(pa.int32()), t.column("original_height").cast(pa.int32())],
        schema=DOWNLOAD_SCHEMA).to_batches(max_chunksize=65536)


DOWNLOAD_SCHEMA = pa.schema([pa.field("uid", pa.string()), pa.field("download_width", pa.int32()),
                             pa.field("download_height", pa.int32())])


def decide_all(batch: pa.RecordBatch, specs: list[FilterSpec], ctxs: list[dict]) -> pa.Table:
    """Decision rows of every filter for one batch of joined rows."""
    t = pa.Table.from_batches([batch])
    if "download_width" in t.column_names:  # input metadata first (DataComp's), download as fallback
        for side in ("width", "height"):
            i = t.column_names.index(f"original_{side}")
            t = t.set_column(i, f"original_{side}", pc.coalesce(t.column(f"original_{side}"), t.column(f"download_{side}")))
    uids = t.column("uid").combine_chunks()
    parts = []
    for spec, ctx in zip(specs, ctxs):
        d = stages.DECIDE[spec.name](t, spec.params, ctx)
        parts.append(decisions_table(uids, spec.name, *d.arrays()))
    return pa.concat_tables(parts)


def caption_pass(batch: pa.RecordBatch, params: dict, column: str, sample_ratio: float) -> pa.Table:
    """Pool rows that pass the image-based caption filter (k-means input), uid-hash sampled."""
    t = pa.Table.from_batches([batch])
    ok = t.column(column).is_valid().to_numpy(zero_copy_only=False).astype(bool)
    for _, mask, _, _ in stages.caption_rules(t, params):
        ok &= ~mask
    if sample_ratio > 0:  # deterministic: the uid's first 32 bits are uniform
        head = np.array([int(u[:8], 16) for u in t.column("uid").to_pylist()], dtype=np.uint64)
        ok &= head < np.uint64(int(sample_ratio * 2**32))
    return t.filter(pa.array(ok)).select(["uid", column])


# ---------------------------------------------------------------- driver
def embedding_tables(dataset: Dataset) -> list[str]:
    return [t for t in dataset.tables() if t.startswith("embeddings/")]


def _checked(dataset: Dataset, table: str) -> str:
    from curate.embedding_space.vectors import check_embedding_shards

    check_embedding_shards(dataset.shards(table))  # one dim across shards, named shard if not
    return table


# DataComp's --arch names for the tables a DataComp pool import writes (curate.ingest.datacomp).
MODEL_ALIASES = {"b32": "ViT-B-32__openai", "l14": "ViT-L-14__openai"}


def resolve_model(dataset: Dataset, model: str | None, spec: FilterSpec) -> str:
    from curate.models.resolve import resolve_embeddings

    tables = embedding_tables(dataset)
    if model:
        model = MODEL_ALIASES.get(model, model)  # DataComp's --arch names
        # any model spec: a table id, an open_clip NAME[:TAG], a checkpoint file
        try:
            return _checked(dataset, f"embeddings/{resolve_embeddings(dataset, model)}")
        except DatasetError as e:
            raise DatasetError(f"filter {spec.name}: no table embeddings/{model.removeprefix('embeddings/')} in "
                               f"{dataset.root} (found: {', '.join(tables) or 'none'}; {e}); "
                               f"run `curate embed` first") from None
    if len(tables) == 1:
        return _checked(dataset, tables[0])
    if not tables:
        raise DatasetError(f"filter {spec.name} needs CLIP embeddings but {dataset.root} has no "
                           "embeddings/<model> table; run `curate embed` first")
    raise DatasetError(f"filter {spec.name}: several embedding tables ({', '.join(tables)}); "
                       f"choose one with {spec.name}:model=NAME")


def check_filters(dataset: Dataset, specs: list[FilterSpec]) -> None:
    """Every check that needs no data pass: samples table, embeddings tables the filters read,
    image_based target paths. Run before an engine starts (a JVM takes seconds)."""
    if not Path(dataset.root).is_dir():
        raise DatasetError(f"dataset folder {dataset.root} does not exist")
    _check_samples(dataset)
    for spec in specs:
        if spec.name in ("clip_score", "laion2b", "image_based"):
            resolve_model(dataset, spec.params.get("model"), spec)
        if spec.name == "image_based":
            for key in ("target", "centroids"):
                v = spec.params.get(key)
                if v and not Path(v).exists() and not (any(c in v for c in "*?[") and glob.glob(v)):
                    raise InputFileError(str(v), f"image_based {key} does not exist")
            t = Path(spec.params.get("target") or "")
            if (spec.params.get("target") and t.is_dir()
                    and not any(next(t.glob(f"*.{ext}"), None) for ext in ("parquet", "pt", "npy"))):
                from curate.models.resolve import resolve_model as resolve_model_spec

                table = resolve_model(dataset, spec.params.get("model"), spec)
                resolve_model_spec(table.split("/", 1)[1], dataset=dataset)  # the model that embeds the folder


def _check_samples(dataset: Dataset) -> list[Path]:
    shards = dataset.shards("samples")
    if not shards:
        raise DatasetError(f"no samples table in {dataset.root}; run `curate ingest` first")
    want = {"uid": pa.string(), "text": pa.string()}
    for p in shards:
        try:
            sch = pq.read_schema(p)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputFileError(str(p), f"cannot read Parquet footer ({e})") from e
        for c in ("uid", "text", "original_width", "original_height"):
            if c not in sch.names:
                raise InputFileError(str(p), f"samples shard has no column {c!r}")
        for c, typ in want.items():
            if not sch.field(c).type.equals(typ) and not sch.field(c).type.equals(pa.large_string()):
                raise InputFileError(str(p), f"column {c!r} has type {sch.field(c).type}, expected string")
    return shards


def _load_target(path: str, model_table: str, dataset: Dataset) -> np.ndarray:
    """Target embeddings: a .npy or DataComp .pt file, a folder or glob of them (concatenated,
    as DataComp joins its five ImageNet-1k files), a .parquet of embeddings, or an image
    folder embedded with the pool's model."""
    from curate.filters.assets import load_matrices, matrix_files

    p = Path(path)
    files = matrix_files(path)
    if files:
        x = load_matrices(files)
    elif p.suffix == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))):
        t = pq.read_table(p)
        col = next((c for c in ("image_embedding", "embedding") if c in t.column_names), None)
        if col is None:
            raise InputFileError(str(p), "no image_embedding or embedding column")
        c = t.column(col).combine_chunks()
        x = c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), -1)
    elif p.is_dir():
        x = _embed_folder(p, model_table, dataset)
    else:
        raise InputFileError(str(p), "image_based target must be an image folder, a .npy / .pt file (or a folder "
                             "or glob of them) or a .parquet of embeddings")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InputFileError(str(p), f"target embeddings must be a non-empty 2-D array, got shape {x.shape}")
    return x


def _embed_folder(folder: Path, model_table: str, dataset: Dataset) -> np.ndarray:
    """Embed every image under ``folder`` with the model that made the pool's embeddings
    (its name, weights and seed come from that embed run's manifest)."""
    from curate.manifest import read_manifest

    model_id = model_table.split("/", 1)[1]
    run = read_manifest(dataset, f"embed-{model_id}")
    if not run or "model" not in run.get("params", {}):
        raise CurateError(f"image_based: cannot tell which model made {model_table} (no _runs/embed-{model_id}.json); "
                          "pass target=FILE.npy with target embeddings from that model instead")
    from curate.embed.core import embed_image_folder
    from curate.models import load_model

    from curate.models.resolve import resolve_model as resolve_model_spec

    ref = resolve_model_spec(model_id, dataset=dataset)
    bundle = load_model(ref.name, ref.pretrained, seed=ref.seed)
    if bundle.model_id != model_id:
        raise CurateError(f"image_based: loaded {bundle.model_id}, expected {model_id}; pass target=FILE.npy instead")
    _, _, x = embed_image_folder(folder, bundle)
    return np.asarray(x, dtype=np.float32)


class _Plan:
    """Columns to join: one s<j> (and maybe e<j>) per embeddings table used."""

    def __init__(self):
        self.models: list[str] = []
        self.with_embedding: dict[int, bool] = {}

    def index(self, table: str, embedding: bool) -> int:
        if table not in self.models:
            self.models.append(table)
            self.with_embedding[len(self.models) - 1] = False
        j = self.models.index(table)
        self.with_embedding[j] = self.with_embedding[j] or embedding
        return j


def run_filters(dataset: Dataset, specs: list[FilterSpec], executor, name: str | None = None,
                lid_model: str | None = None, recompute_stats: bool = False,
                rows_per_shard: int = 2_000_000) -> dict:
    """Run ``specs`` over the pool; returns the run manifest (also written to ``_runs``)."""
    if not specs:
        raise FilterSpecError("give at least one --filter")
    seen = [s.name for s in specs]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise FilterSpecError(f"filter {dup[0]} given twice; run it again under another --name instead")
    name = name or "+".join(seen)
    check_name(name, "filter run name")
    shards = _check_samples(dataset)
    frames = frames_for(executor)
    m = RunManifest("filter", {"name": name, "filters": [str(s) for s in specs],
                               "specs": [{"name": s.name, **s.params} for s in specs],
                               "engine": executor.name, "rows_per_shard": rows_per_shard})
    m["inputs"] = [{"table": "samples", "rows": dataset.count("samples"), "shards": len(shards)}]

    # Score-only runs (clip_score, laion2b with gcld3) read no caption statistics: no fastText pass.
    with_stats = any(s.name in ("basic", "text_based", "image_based")
                     or (s.name == "laion2b" and s.params["lang_id"] == "fasttext") for s in specs)
    with m.stage("text_stats"):
        if with_stats:
            ts = text_stats.compute_text_stats(dataset, executor, lid_model, recompute=recompute_stats)
            m["inputs"].append({"lid_model": file_fingerprint(ts["lid_model"])})
        else:
            ts = {"rows": m["inputs"][0]["rows"], "shards": 0, "skipped_shards": 0, "not_needed": True}

    plan, ctxs, resolved = _Plan(), [], {}
    with m.stage("prepare"):
        for spec in specs:
            ctx, info = _prepare(dataset, spec, executor, frames, plan, shards, name)
            ctxs.append(ctx)
            resolved[spec.name] = info
    for table in plan.models:
        m["inputs"].append({"table": table, "rows": dataset.count(table), "shards": len(dataset.shards(table))})
    m["resolved"] = resolved

    with m.stage("decide"):
        with_text = any(s.name == "text_based" or (s.name == "laion2b" and s.params["lang_id"] == "gcld3")
                        for s in specs)
        base = frames.from_tasks(_base_tasks(dataset, shards, with_text, with_stats), read_base,
                                 base_schema(with_text, with_stats))
        if any(s.name == "basic" for s in specs) and dataset.has_table("downloads"):
            tasks = [{"path": str(p)} for p in dataset.shards("downloads")]
            base = frames.join(base, frames.from_tasks(tasks, read_downloads, DOWNLOAD_SCHEMA))
        for j, table in enumerate(plan.models):
            base = frames.join(base, _emb_frame(dataset, frames, table, j, plan.with_embedding[j]))
        fn = functools.partial(decide_all, specs=specs, ctxs=ctxs)
        out = frames.map(base, fn, load_schema("decisions").arrow())
        written = frames.write_sorted(out, dataset, f"decisions/{name}", "decisions", ["uid", "stage"], rows_per_shard)
    m["outputs"] = {"decisions": f"decisions/{name}", "decision_rows": written["rows"]}

    with m.stage("subset"):
        counts, n_kept = _summarize(dataset, name, [s.name for s in specs], ts["rows"], executor)
        if "image_based" in resolved:  # guards: degenerate embeddings, most of the pool removed
            from curate.embedding_space import guards

            g = resolved["image_based"]["guards"]
            removed = ts["rows"] - counts["image_based"].get("kept", 0)
            g["warnings"] += guards.removal_warning("image_based", ts["rows"], removed)
            m["guards"] = g
        d = write_kept_subset(dataset, name, name, n_kept, manifest={
            "stage": "filter", "filters": [str(s) for s in specs], "decisions": f"decisions/{name}",
            "run": f"_runs/filter-{name}.json", "resolved": resolved}, stages=len(specs))
    m["outputs"]["subset"] = str(d.relative_to(dataset.root))
    # the selection count keys (input, kept, removed, reasons = rows of decisions/<run> per reason)
    m["counts"] = {"input": ts["rows"], "reasons": _rows_per_reason(counts),
                   "samples": ts["rows"], "kept": n_kept, "removed": ts["rows"] - n_kept,
                   "filters": counts, "text_stats": {k: v for k, v in ts.items() if k != "lid_model"}}
    m.write(dataset, f"filter-{name}")
    return m.data


def _base_tasks(dataset: Dataset, shards: list[Path], with_text: bool, with_stats: bool = True) -> list[dict]:
    return [{"samples_shard": str(p), "with_text": with_text,
             "stats_shard": str(dataset.shard_path("text_stats", i)) if with_stats else None}
            for i, p in enumerate(shards)]


def _emb_frame(dataset: Dataset, frames, table: str, j: int, with_embedding: bool):
    tasks = [{"path": str(p), "j": j, "with_embedding": with_embedding} for p in dataset.shards(table)]
    return frames.from_tasks(tasks, read_embeddings, emb_schema(j, with_embedding))


def _fraction_threshold(dataset: Dataset, table: str, fraction: float, executor) -> dict:
    r = top_fraction_threshold([str(p) for p in dataset.shards(table)], "clip_score", fraction, executor)
    return {"fraction": fraction, "threshold": r["threshold"], "pool_rows": r["n"], "cut_index": r["index"]}


def _prepare(dataset, spec: FilterSpec, executor, frames, plan: _Plan, shards, run_name: str) -> tuple[dict, dict]:
    p = spec.params
    if spec.name == "basic":
        return {}, {"size_source": "samples, then downloads" if dataset.has_table("downloads") else "samples"}
    if spec.name in ("clip_score", "laion2b"):
        table = resolve_model(dataset, p["model"], spec)
        j = plan.index(table, embedding=False)
        if spec.name == "laion2b":
            info = {"threshold": p["threshold"]}
        elif p["fraction"] is not None:
            info = _fraction_threshold(dataset, table, p["fraction"], executor)
        else:
            info = {"threshold": p["threshold"]}
        info["model"] = table
        return {"score_column": f"s{j}", "threshold": info["threshold"]}, info
    if spec.name == "text_based":
        offsets = stages.read_synset_offsets(p["synsets"], p["wordnet_dir"])
        from curate.wordnet import check_wordnet

        root = check_wordnet(p["wordnet_dir"])
        return ({"target_offsets": offsets},
                {"target_synsets": len(offsets), "synsets_file": file_fingerprint(p["synsets"]), "wordnet": str(root)})
    if spec.name == "image_based":
        return _prepare_image_based(dataset, spec, executor, frames, plan, shards, run_name)
    raise FilterSpecError(f"unknown filter {spec.name}")


def _prepare_image_based(dataset, spec, executor, frames, plan, shards, run_name) -> tuple[dict, dict]:
    from curate.embedding_space.kmeans import train_kmeans

    p = spec.params
    table = resolve_model(dataset, p["model"], spec)
    j = plan.index(table, embedding=True)
    ctx: dict = {"embedding_column": f"e{j}"}
    info: dict = {"model": table}
    if p["clip_threshold"] is not None or p["clip_fraction"] is not None:
        # DataComp cuts on the B/32 or L/14 score (--arch) but clusters L/14 embeddings.
        score_table = resolve_model(dataset, p["clip_model"], spec) if p["clip_model"] else table
        js = plan.index(score_table, embedding=False)
        if p["clip_fraction"] is not None:
            info["clip"] = _fraction_threshold(dataset, score_table, p["clip_fraction"], executor)
        else:
            info["clip"] = {"threshold": p["clip_threshold"]}
        info["clip"]["model"] = score_table
        ctx["score_column"], ctx["threshold"] = f"s{js}", info["clip"]["threshold"]
    if p["centroids"]:
        from curate.filters.assets import load_matrix

        centroids = load_matrix(p["centroids"])
        info["centroids"] = file_fingerprint(p["centroids"])
    else:
        # DataComp clusters the caption-filtered pool (no CLIP-score cut) with L2 k-means.
        base = frames.from_tasks(_base_tasks(dataset, shards, False), read_base, base_schema(False))
        joined = frames.join(base, _emb_frame(dataset, frames, table, j, True), how="inner")
        out_schema = pa.schema([pa.field("uid", pa.string()), pa.field(f"e{j}", pa.binary())])
        fn = functools.partial(caption_pass, params=p, column=f"e{j}", sample_ratio=p["sample_ratio"])
        pool = frames.collect(frames.map(joined, fn, out_schema))
        pool = pool.sort_by("uid")  # join order varies; the k-means input must not
        _, x = stages.embeddings_from_binary(pool.column(f"e{j}"))
        if len(x) < p["k"]:
            raise CurateError(f"image_based: k={p['k']} clusters but only {len(x)} caption-filtered pool "
                              "embeddings; pass image_based:k=N with a smaller N")
        # max_points_per_centroid as DataComp: large, so FAISS does not subsample.
        centroids = train_kmeans(x, p["k"], niter=p["niter"], seed=p["seed"], max_points_per_centroid=10_000_000)
        info.update({"kmeans_points": int(len(x)), "k": p["k"], "niter": p["niter"], "seed": p["seed"]})
    path = dataset.root / "decisions" / run_name / "_image_based_centroids.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, centroids)
    target = _load_target(p["target"], table, dataset)
    if target.shape[1] != centroids.shape[1]:
        raise CurateError(f"image_based: target embeddings have dim {target.shape[1]}, pool has {centroids.shape[1]}")
    from curate.embedding_space import guards

    health, warns = guards.table_health(dataset, table, "image")
    dists = {"embeddings": health}
    if not p["centroids"] and len(x):
        # what the filter compares: each sample's similarity to its nearest centroid (a bounded
        # head of the uid-sorted k-means input, already on the driver)
        xs = x[:8 * guards.PAIR_SAMPLE]
        cn = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        xn = xs / np.maximum(np.linalg.norm(xs, axis=1, keepdims=True), 1e-12)
        sims = np.einsum("ij,ij->i", xn, cn[stages.assign_clusters(xs, centroids)])
        dists["acted_on"] = guards.distribution(guards.histogram(sims), "cosine of a sample to its nearest centroid")
    info["guards"] = guards.guards_record(dists, warns)
    tc = np.unique(stages.assign_clusters(target, centroids))
    ctx.update({"centroids_path": str(path), "target_clusters": [int(c) for c in tc]})
    info.update({"target": p["target"], "target_images": int(len(target)), "target_clusters": int(len(tc)),
                 "centroids_path": str(path.relative_to(dataset.root)),
                 "centroids_sha256": hashlib.sha256(centroids.tobytes()).hexdigest()})
    return ctx, info


def _rows_per_reason(per_stage: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for reasons in per_stage.values():
        for r, n in reasons.items():
            out[r] = out.get(r, 0) + n
    return dict(sorted(out.items()))


_UID_KEPT = pa.schema([("uid", pa.string()), ("kept_n", pa.int64())])
_PER_UID = pa.schema([("n", pa.int64()), ("all_kept", pa.bool_())])


def _uid_kept(batch: pa.RecordBatch) -> pa.Table:
    return pa.table([batch.column("uid"), pc.cast(pc.fill_null(batch.column("kept"), False), pa.int64())],
                    schema=_UID_KEPT)


def _summarize(dataset: Dataset, name: str, stage_names: list[str], n_samples: int, executor) -> tuple[dict, int]:
    """Counts per filter and reason, and how many uids every filter kept, counted by the engine
    over the written decisions. Checks one decision per (uid, filter)."""
    from curate.selection import DECISIONS, MAX_REASONS

    dec = executor.frame_read([str(p) for p in dataset.shards(f"decisions/{name}")], DECISIONS)
    g = dec.aggregate(["stage", "reason"], {"n": ("uid", "count")}).collect_small(MAX_REASONS)
    counts: dict[str, dict[str, int]] = {s: {} for s in stage_names}
    for stage, reason, n in zip(g.column("stage").to_pylist(), g.column("reason").to_pylist(), g.column("n").to_pylist()):
        counts[stage][reason] = n
    for s in stage_names:
        total = sum(counts[s].values())
        if total != n_samples:
            raise DatasetError(f"filter {s}: {total} decisions for {n_samples} samples; duplicate uids in "
                               "samples or in an embeddings table?")
        counts[s] = dict(sorted(counts[s].items()))
    k = len(stage_names)

    def per_uid(batch: pa.RecordBatch) -> pa.Table:
        n = batch.column("n")
        return pa.table([n, pc.and_(pc.equal(n, k), pc.equal(batch.column("k"), k))], schema=_PER_UID)

    hist = (dec.map_batches(_uid_kept, _UID_KEPT).aggregate(["uid"], {"n": ("uid", "count"), "k": ("kept_n", "sum")})
            .map_batches(per_uid, _PER_UID).aggregate(["n", "all_kept"], {"uids": ("n", "count")})
            .collect_small(MAX_REASONS))
    uids = sum(hist.column("uids").to_pylist())
    if set(hist.column("n").to_pylist()) - {k} or uids != n_samples:
        raise DatasetError(f"decisions/{name}: not exactly one decision per sample and filter "
                           f"({uids} uids for {n_samples} samples); duplicate uids in samples?")
    kept = sum(u for u, a in zip(hist.column("uids").to_pylist(), hist.column("all_kept").to_pylist()) if a)
    return counts, kept
