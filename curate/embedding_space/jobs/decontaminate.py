"""``curate decontaminate``: remove pool samples whose image embedding is a near copy of an
evaluation image (cosine >= threshold); reports, per evaluation image, how many pool copies
it has and the closest one (``decontamination/<run>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.decisions import decisions_table
from curate.embedding_space import guards as _guards
from curate.embedding_space.common import (cleanup_tmp, embeddings_table, restricted_frame, shard_tasks, uid_frame,
                                           input_record, write_uid_filter)
from curate.embedding_space.decontaminate import REASON as EVAL_REASON
from curate.embedding_space.jobs.shared import (DECISIONS, NO_EMBEDDING, as_dataset, check_dataset, missing_frame,
                                                samples_left_out, with_missing)
from curate.embedding_space.vectors import embedding_matrix
from curate.engine import LocalExecutor, worker_cache
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection
from curate.tables import Dataset, atomic_write_bytes, load_schema


def check_decontaminate(ds: Dataset, model_id: str, eval_source: str, threshold: float,
                        model_name: str | None = None, pretrained: str | None = None) -> str:
    """The pool's embeddings table, after checking the threshold, the evaluation source and, for
    an image folder, that the model to embed it with resolves."""
    if not -1.0 <= threshold <= 1.0:
        raise DatasetError(f"--threshold must be a cosine similarity in [-1, 1], got {threshold}")
    table = embeddings_table(check_dataset(ds), model_id)
    source = check_eval_source(ds, eval_source)
    if storage.is_dir(source) and not _eval_parquet_files(source):
        _check_has_images(source)  # before the engine and the model start
        _eval_model_ref(ds, model_id, model_name, pretrained)
    return table


def check_eval_source(ds: Dataset, eval_source) -> str:
    """``--eval`` names something that is there: an image folder, a Parquet table, or a table of
    ``ds`` (checked before the dataset's own tables, so a typo in it is said first)."""
    source = str(eval_source)
    if not storage.exists(source) and not _is_table(ds, source):
        raise DatasetError(f"--eval {eval_source}: neither an image folder, a Parquet table, nor a table of {ds.root}")
    return source


def _is_table(ds: Dataset, source: str) -> bool:
    """Whether ``source`` names a table of ``ds``; a path (absolute, a URI, with ``..``) does not,
    and is not an error here (a missing folder is said as one)."""
    from curate.errors import CurateError

    if storage.is_uri(source) or Path(source).is_absolute():
        return False
    try:
        return ds.has_table(source)
    except CurateError:  # not a table name at all
        return False


def _check_has_images(folder: str) -> None:
    """An evaluation image folder holds at least one image (a one-line error, found by listing)."""
    from curate.embed.core import IMAGE_SUFFIXES, list_image_folder

    if not storage.is_uri(folder):
        list_image_folder(folder)  # its error: no images under the folder
    elif not any(f.lower().endswith(IMAGE_SUFFIXES) for f in storage.list_files(folder, recursive=True)):
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")


def _eval_model_ref(ds: Dataset, model_id: str, model_name: str | None, pretrained: str | None):
    """The model that embeds evaluation images: the pool's own (via the resolver), or the one given."""
    from curate.models.resolve import resolve_model

    if model_name is None:
        return resolve_model(model_id, dataset=ds)
    return resolve_model(model_name, pretrained)


def _eval_index(path: str):
    def build():
        from curate.embedding_space.decontaminate import build_eval_index

        return build_eval_index(storage.load_npy(path))

    return worker_cache(("eval_index", *storage.fingerprint(path)), build)


def _decontam_rows(task: dict):
    from curate.embedding_space.decontaminate import nearest_eval

    t = storage.read_parquet(task["path"], columns=["uid", "image_embedding"])
    if t.num_rows == 0:
        return
    x = embedding_matrix(t, "image", f"{task['path']}: ")
    sims, ids = nearest_eval(_eval_index(task["eval_npy"]), x)
    yield pa.record_batch([t.column("uid").combine_chunks(), pa.array(sims), pa.array(ids.astype(np.int64))],
                          schema=_DECONTAM_SCHEMA)


_DECONTAM_SCHEMA = pa.schema([("uid", pa.string()), ("similarity", pa.float32()), ("eval_index", pa.int64())])
_PER_EVAL = pa.schema([("eval_index", pa.int64()), ("count", pa.int64()), ("best", pa.float64()),
                       ("nearest", pa.string())])


def _nearest_copy(rows: pa.Table) -> pa.Table:
    """Each evaluation image's pool copies (rows of one or several images): their number, the
    closest (ties: smallest uid). Vectorised over images (``group_apply_many``)."""
    from curate.engine.frame import first_of_runs

    t = rows.sort_by([("eval_index", "ascending"), ("similarity", "descending"), ("uid", "ascending")])
    starts = np.flatnonzero(first_of_runs(t.column("eval_index")) == np.arange(t.num_rows))
    top = t.take(pa.array(starts))
    return pa.table([top.column("eval_index"), pa.array(np.diff(np.r_[starts, t.num_rows]), pa.int64()),
                     top.column("similarity").cast(pa.float64()), top.column("uid")], schema=_PER_EVAL)


def _eval_parquet_files(source: str) -> list | None:
    """The Parquet files of an evaluation source that is a Parquet file or a folder holding
    some (a path or a URI); None for anything else (an image folder, a table name)."""
    if not storage.is_uri(source):
        p = Path(source)
        if p.is_file() and p.suffix == ".parquet":
            return [p]
        return sorted(p.glob("*.parquet")) or None if p.is_dir() else None
    if storage.is_file(source):
        return [source] if source.endswith(".parquet") else None
    return [f for f in storage.list_files(source) if f.endswith(".parquet")] or None


def load_eval_embeddings(source: str, dataset: Dataset, model_id: str, model_name: str | None = None,
                         pretrained: str | None = None,
                         batch_size: int = 64) -> tuple[list[str], np.ndarray, list[dict]]:
    """Evaluation image ids and normalised embeddings from a folder of images (embedded with the
    pool's model), a Parquet file/table folder with ``image_embedding``, or a table of ``dataset``;
    and the folder's images that could not be decoded (``{"eval_id", "error"}``; they are left
    out, as a web image that cannot be decoded is left out of the embed job)."""
    table_path = _eval_parquet_files(source)
    if table_path is None and not storage.exists(source) and _is_table(dataset, source):
        table_path = dataset.shards(source)
    if table_path is not None:
        t = pa.concat_tables([storage.read_parquet(f) for f in table_path])
        if "image_embedding" not in t.column_names:
            raise DatasetError(f"{source}: evaluation table has no image_embedding column (columns: {t.column_names})")
        id_col = next((c for c in ("uid", "key", "path", "id") if c in t.column_names), None)
        ids = [str(v) for v in t.column(id_col).to_pylist()] if id_col else [str(i) for i in range(t.num_rows)]
        return ids, embedding_matrix(t, "image", f"{source}: "), []
    if not storage.is_dir(source):
        raise DatasetError(f"--eval {source}: neither an image folder, a Parquet table, nor a table of {dataset.root}")
    if storage.is_uri(source):  # an evaluation set is small: its images are fetched to a local folder
        import tempfile

        with tempfile.TemporaryDirectory(prefix="curate-eval-") as tmp:
            storage.fetch_folder(source, tmp)
            return _embed_eval_folder(Path(tmp), dataset, model_id, model_name, pretrained, batch_size)
    return _embed_eval_folder(Path(source), dataset, model_id, model_name, pretrained, batch_size)


def _embed_eval_folder(p: Path, dataset: Dataset, model_id: str, model_name: str | None, pretrained: str | None,
                       batch_size: int) -> tuple[list[str], np.ndarray, list[dict]]:
    from curate.embed.core import embed_decodable_images, list_image_folder
    from curate.models import load_model

    ref = _eval_model_ref(dataset, model_id, model_name, pretrained)
    bundle = load_model(ref.name, ref.pretrained, seed=ref.seed)
    if bundle.model_id != model_id:
        raise DatasetError(f"evaluation images would be embedded with {bundle.model_id}, but the pool embeddings "
                           f"are {model_id}; pass --eval-model/--eval-pretrained matching the pool's model")
    paths, _ = list_image_folder(p)
    x, errors = embed_decodable_images(bundle, paths, batch_size=batch_size)
    ids = [Path(q).relative_to(p).as_posix() for q in paths]
    failed = {i for i, _ in errors}
    undecodable = [{"eval_id": ids[i], "error": f"{e.error_class}: {e.message.replace(str(p) + '/', '')}"}
                   for i, e in errors]
    return [e for i, e in enumerate(ids) if i not in failed], np.asarray(x, dtype=np.float32), undecodable


def run_decontaminate(dataset, model_id: str, eval_source: str, threshold: float, run: str = "decontaminate",
                      model_name: str | None = None, pretrained: str | None = None, input_uids=None,
                      executor=None, output: str | None = None) -> dict:
    from curate.embedding_space.vectors import normalize_rows

    ds = as_dataset(dataset)
    executor = executor or LocalExecutor()
    table = check_decontaminate(ds, model_id, eval_source, threshold, model_name, pretrained)
    m = RunManifest(run, dict(stage="decontaminate", model_id=model_id, eval=str(eval_source), threshold=threshold,
                              restricted=input_uids is not None,
                              input_subset=input_record(input_uids), engine=executor.name))
    with m.stage("embed_eval"):
        eval_ids, ex, undecodable = load_eval_embeddings(str(eval_source), ds, model_id, model_name, pretrained)
    ex = normalize_rows(ex)
    if len(eval_ids) == 0:
        raise DatasetError(f"--eval {eval_source}: no evaluation images"
                           + (f" could be decoded ({_undecodable_line(undecodable)})" if undecodable else ""))
    m["eval_undecodable"] = undecodable
    m["inputs"] = [{"table": table, "rows": ds.count(table)}, {"eval": str(eval_source), "images": len(eval_ids)}]
    npy = ds.path(f"_tmp/{run}/eval.npy")
    atomic_write_bytes(npy, storage.npy_bytes(np.asarray(ex, dtype=np.float32)))
    uids = uid_frame(executor, write_uid_filter(ds, run, input_uids))
    eval_names = pa.array(eval_ids, pa.string())
    with m.stage("search"):
        rows = restricted_frame(executor, shard_tasks(ds, table, eval_npy=str(npy)), _decontam_rows,
                                _DECONTAM_SCHEMA, uids).cache()
        # per evaluation image: how many pool samples were its near copies, the closest one
        # (highest similarity, then smallest uid); one row per evaluation image comes back
        per_eval = (rows.map_batches(_hits(threshold), _DECONTAM_SCHEMA)
                    .group_apply_many("eval_index", _nearest_copy, _PER_EVAL).collect_small(len(eval_ids)))
    try:
        report, count = _write_report(ds, run, per_eval, eval_names)
        miss = missing_frame(executor, ds, uids, table, "decontaminate", NO_EMBEDDING)
        health, warns = _guards.table_health(ds, table, "image", executor=executor)
        warns = warns + samples_left_out(ds, table, uids is not None)
        if undecodable:  # not checked for copies in the pool: said, not silent
            said = (f"{len(undecodable)} evaluation image(s) could not be decoded and were not searched for: "
                    f"{_undecodable_line(undecodable)} (all listed in the manifest's eval_undecodable)")
            warns = [said, *warns]
        res = finish_selection(executor, ds, run, "decontaminate",
                               with_missing(rows.map_batches(_to_decisions(threshold, eval_names), DECISIONS), miss),
                               m, output, {"eval_images": len(eval_ids), "eval_images_with_copies": int((count > 0).sum()),
                                           "eval_images_undecodable": len(undecodable)},
                               guards=({"embeddings": health}, warns),
                               acted_on=("cosine to the nearest evaluation image", None),
                               cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        rows.release()
    res["report"] = report
    return res


def _undecodable_line(undecodable: list[dict], shown: int = 3) -> str:
    """The first few undecodable evaluation images, for a one-line message."""
    names = "; ".join(f"{u['eval_id']} ({u['error']})" for u in undecodable[:shown])
    return names + (f"; and {len(undecodable) - shown} more" if len(undecodable) > shown else "")


def _hits(threshold: float):
    """A batch's rows at or above ``threshold`` (pool copies of an evaluation image)."""
    def hits(batch: pa.RecordBatch) -> pa.Table:
        return pa.Table.from_batches([batch]).filter(pc.greater_equal(batch.column("similarity"), threshold))

    return hits


def _to_decisions(threshold: float, eval_names: pa.Array):
    """A batch's decisions: removed at or above ``threshold``, with the evaluation image it copies."""
    def to_decisions(batch: pa.RecordBatch) -> pa.Table:
        sims = batch.column("similarity").to_numpy()
        removed = sims >= threshold
        detail = pc.if_else(pa.array(removed), eval_names.take(batch.column("eval_index")),
                            pa.nulls(batch.num_rows, pa.string()))
        return decisions_table(batch.column("uid"), "decontaminate", pa.array(~removed),
                               pa.array(np.where(removed, EVAL_REASON, "kept")), pa.array(sims.astype(np.float64)),
                               detail)

    return to_decisions


def _write_report(ds: Dataset, run: str, per_eval: pa.Table, eval_names: pa.Array) -> tuple[pa.Table, np.ndarray]:
    """``decontamination/<run>``: every evaluation image, its number of pool copies and the
    closest; returns the table and the copies per evaluation image."""
    n = len(eval_names)
    e = per_eval.column("eval_index").to_numpy()
    count = np.zeros(n, np.int64)
    count[e] = per_eval.column("count").to_numpy()
    best = np.full(n, np.nan)
    best[e] = per_eval.column("best").to_numpy()
    nearest = np.full(n, None, dtype=object)
    nearest[e] = per_eval.column("nearest").to_pylist()
    report = pa.Table.from_arrays(
        [eval_names, pa.array(count), pa.array(best, pa.float64(), mask=np.isnan(best)),
         pa.array(nearest.tolist(), pa.string())], schema=load_schema("decontamination").arrow())
    ds.write_table(f"decontamination/{run}", report)
    return report, count
