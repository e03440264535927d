"""DataComp's image_based filter prepared over the pool: k-means centroids of the caption-filtered
pool embeddings (or given ones), the target images' clusters, and the embedding guards."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.errors import CurateError, DatasetError, InputFileError
from curate.filters import stages
from curate.manifest import file_fingerprint
from curate.tables import Dataset, atomic_write_bytes
from curate.filters.checks import resolve_model
from curate.filters.readers import (base_schema, base_tasks, caption_pass, emb_schema, fraction_threshold, read_base,
                                    read_embeddings)


def _load_target(path: str, model_table: str, dataset: Dataset) -> np.ndarray:
    """Target embeddings: a .npy or DataComp .pt file, a folder or glob of them (concatenated,
    as DataComp joins its five ImageNet-1k files), a .parquet of embeddings, or an image
    folder embedded with the pool's model."""
    from curate.filters.assets import load_matrices, matrix_files

    path = storage.local_copy(path)  # a URI's file or folder, copied (small: the target set)
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


CENTROIDS_FILE = "_image_based_centroids.npy"


def prepare_image_based(dataset, spec, executor, plan, shards, run_name, staged: str) -> tuple[dict, dict]:
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
            info["clip"] = fraction_threshold(dataset, score_table, p["clip_fraction"], executor)
        else:
            info["clip"] = {"threshold": p["clip_threshold"]}
        info["clip"]["model"] = score_table
        ctx["score_column"], ctx["threshold"] = f"s{js}", info["clip"]["threshold"]
    if p["centroids"]:
        from curate.filters.assets import load_matrix

        local = storage.local_copy(p["centroids"])
        centroids = load_matrix(local)
        info["centroids"] = dict(file_fingerprint(local), path=p["centroids"])
    else:
        centroids, x, drawn = _pool_centroids(dataset, p, executor, table, j, shards)
        info.update({"kmeans_points": int(len(x)), **drawn, "k": p["k"], "niter": p["niter"], "seed": p["seed"]})
    # beside the run's staged decisions (read by every worker that decides), then in
    # decisions/<run> with them (``rel``, recorded)
    rel = f"decisions/{run_name}/{CENTROIDS_FILE}"
    atomic_write_bytes(dataset.path(f"{staged}/{CENTROIDS_FILE}"), storage.npy_bytes(centroids))
    target = _load_target(p["target"], table, dataset)
    if target.shape[1] != centroids.shape[1]:
        raise CurateError(f"image_based: target embeddings have dim {target.shape[1]}, pool has {centroids.shape[1]}")
    info["guards"] = _guards(dataset, table, centroids, None if p["centroids"] else x, executor)
    tc = np.unique(stages.assign_clusters(target, centroids))
    sha = hashlib.sha256(centroids.tobytes()).hexdigest()
    ctx.update({"centroids_path": str(dataset.path(f"{staged}/{CENTROIDS_FILE}")), "centroids_sha256": sha,
                "target_clusters": [int(c) for c in tc]})
    info.update({"target": p["target"], "target_images": int(len(target)), "target_clusters": int(len(tc)),
                 "centroids_path": rel, "centroids_sha256": sha})
    return ctx, info


def _pool_centroids(dataset: Dataset, p: dict, executor, table: str, j: int, shards) -> tuple[np.ndarray, np.ndarray, dict]:
    """DataComp clusters the caption-filtered pool (no CLIP-score cut) with L2 k-means:
    (centroids, the uid-sorted k-means input, what it was drawn from)."""
    from curate.embedding_space.kmeans import train_kmeans

    column = f"e{j}"
    bound = kmeans_bound(dataset, table, p)
    pool = _caption_filtered_pool(dataset, executor, p, table, j, shards)
    rows, n = kmeans_input(pool, bound, column)
    _, x = stages.embeddings_from_binary(rows.column(column))
    if len(x) < p["k"]:
        raise CurateError(f"image_based: k={p['k']} clusters but only {len(x)} caption-filtered pool "
                          "embeddings; pass image_based:k=N with a smaller N")
    # max_points_per_centroid as DataComp: large, so FAISS does not subsample (the bound above does).
    centroids = train_kmeans(x, p["k"], niter=p["niter"], seed=p["seed"], max_points_per_centroid=10_000_000)
    return centroids, x, {"caption_filtered_rows": int(n), "kmeans_bound": int(bound), "kmeans_sampled": n > bound}


def kmeans_bound(dataset: Dataset, table: str, p: dict) -> int:
    """The most k-means input rows: ``max_kmeans_points``, else ``curate cluster``'s default
    byte cap on the float32 training matrix (``sampling.MAX_SAMPLE_BYTES``), never below k."""
    from curate.embedding_space.sampling import MAX_SAMPLE_BYTES
    from curate.embedding_space.vectors import check_embedding_shards

    if p.get("max_kmeans_points") is not None:
        return int(p["max_kmeans_points"])
    dim = check_embedding_shards(dataset.shards(table), ("image_embedding",)) or 1
    return max(int(p["k"]), MAX_SAMPLE_BYTES // (4 * dim))


KEYS = pa.schema([("hash", pa.int64()), ("shard", pa.int32()), ("uid", pa.string())])
KEY_ORDER = ("hash", "uid")  # curate cluster's sample order: smallest uid hash, ties by uid


def _pool_schema(column: str) -> pa.Schema:
    return pa.schema([("uid", pa.string()), (column, pa.binary()), ("shard", pa.int32()), ("hash", pa.int64())])


def _read_base_of_shard(task: dict):
    """``read_base`` with the samples shard's index (the bounded reduction groups by it)."""
    for b in read_base(task):
        yield b.append_column("shard", pa.array(np.full(b.num_rows, task["index"], np.int32)))


def _caption_rows(batch: pa.RecordBatch, params: dict, column: str) -> pa.Table:
    """The caption-filtered rows of a joined batch with their seed-``params['seed']`` uid hash."""
    from curate.embedding_space.sampling import uid_hash_array

    t = caption_pass(batch, params, column, params["sample_ratio"], keep=("shard",))
    return t.append_column("hash", pa.array(uid_hash_array(t.column("uid"), params["seed"]), pa.int64()))


def _caption_filtered_pool(dataset: Dataset, executor, p: dict, table: str, j: int, shards):
    """A frame (uid, e<j>, shard, hash) of the caption-filtered pool, on the workers."""
    column = f"e{j}"
    tasks = [dict(t, index=i) for i, t in enumerate(base_tasks(dataset, shards, False))]
    base = executor.frame_from_tasks(tasks, _read_base_of_shard,
                                     base_schema(False).append(pa.field("shard", pa.int32())))
    emb = executor.frame_from_tasks([{"path": str(s), "j": j, "with_embedding": True} for s in dataset.shards(table)],
                                    read_embeddings, emb_schema(j, True))
    fn = functools.partial(_caption_rows, params=p, column=column)
    return base.join(emb, "uid").map_batches(fn, _pool_schema(column))


def _below(threshold: int):
    def fn(batch: pa.RecordBatch) -> pa.Table:
        t = pa.Table.from_batches([batch]).select(KEYS.names)
        return t.filter(pc.less_equal(t.column("hash"), threshold))

    return fn


def kmeans_input(pool, bound: int, column: str) -> tuple[pa.Table, int]:
    """(uid-sorted (uid, ``column``) rows of the k-means input, caption-filtered rows): the whole
    pool when it has at most ``bound`` rows (DataComp's input), else its ``bound`` smallest
    (uid hash, uid), found by the workers (``guard_sample.smallest_picks``). The driver gets
    counts and at most ``bound`` rows."""
    from curate.embedding_space.guard_sample import smallest_picks
    from curate.engine.frame import TooManyRows

    keys = pool.select(KEYS.names).cache()
    try:
        n = keys.count()
        picked = None if n <= bound else smallest_picks(lambda t: keys.map_batches(_below(t), KEYS), n, bound,
                                                         KEYS, KEY_ORDER)
        try:
            rows = pool if picked is None else pool.semi_join(picked[1].select(["uid"]))
            rows = rows.select(["uid", column]).collect_small(bound)
        except TooManyRows as e:
            raise DatasetError(f"image_based: more k-means input rows than uids picked ({e}); duplicate uids in "
                               "samples or in the embeddings table?") from None
        finally:
            if picked is not None:
                picked[0].release()
    finally:
        keys.release()
    return rows.sort_by("uid"), n  # join order varies; the k-means input must not


def _guards(dataset: Dataset, table: str, centroids: np.ndarray, x: np.ndarray | None, executor=None) -> dict:
    """The embedding guards of the pool table and, after k-means on the pool, of what the
    filter compares."""
    from curate.embedding_space import guards

    health, warns = guards.table_health(dataset, table, "image", executor=executor)
    dists = {"embeddings": health}
    if x is not None and len(x):
        # what the filter compares: each sample's similarity to its nearest centroid (a bounded
        # head of the uid-sorted k-means input, already on the driver; sampled or not, its rows
        # are a pseudo-random pick: uids are hashes)
        xs = x[:8 * guards.PAIR_SAMPLE]
        cn = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        xn = xs / np.maximum(np.linalg.norm(xs, axis=1, keepdims=True), 1e-12)
        sims = np.einsum("ij,ij->i", xn, cn[stages.assign_clusters(xs, centroids)])
        dists["acted_on"] = guards.distribution(guards.histogram(sims), "cosine of a sample to its nearest centroid")
    return guards.guards_record(dists, warns)
