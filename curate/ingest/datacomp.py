"""A DataComp pool as shipped: the ``.npz`` beside each metadata shard becomes embeddings tables.

DataComp's ``download_upstream.py --download_npz`` puts ``<shard>.npz`` next to every
``<shard>.parquet``: float16 arrays ``b32_img``, ``b32_txt`` (OpenAI ViT-B/32) and ``l14_img``,
``l14_txt`` (OpenAI ViT-L/14), row i of each array belonging to row i of the Parquet shard,
whose ``clip_b32_similarity_score`` / ``clip_l14_similarity_score`` are the cosine of the two.
For every model present, ingest writes ``embeddings/<model_id>/`` (the ``embeddings`` schema):
the shipped vectors as they are and the shipped score, float32 as stored, as ``clip_score``.

Checks, each failing with one line naming the shard: every Parquet shard has its ``.npz`` (or
none has: metadata only), the same models everywhere, row counts, image and text dims, finite
vectors, and row order: against an ``uid`` array when the ``.npz`` carries one, else through
the shipped score, which must be the cosine of the row's two vectors (float16 error is about
0.001; rows of another order miss by about 0.05).

Plan (driver): file names and ``.npy`` headers only. Import (executors): one task per shard
reads its uids, scores and arrays, drops the rows ingest rejected or merged (read from the
rejects and duplicates tables for that file), and commits one part per model; a rerun skips
shards whose parts exist. An ``.npz`` on a store is read in place, like its shard, never
copied: the plan reads its headers by small ranged reads, a task fetches it in one request
(``storage.open_npz``; member by member when it is over 256 MiB).
"""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate import storage
from curate.storage.objects import file_info
from curate.errors import DatasetError, InputFileError
from curate.tables import Dataset, load_schema
from curate.tables.atomic import PARQUET_OPTIONS, atomic_path

# name -> (open_clip model, pretrained tag, Parquet score column)
MODELS = {
    "b32": ("ViT-B-32", "openai", "clip_b32_similarity_score"),
    "l14": ("ViT-L-14", "openai", "clip_l14_similarity_score"),
}
ALIGN_TOLERANCE = 0.02  # |shipped score - cosine of the shipped vectors| for a row to line up
ALIGN_MAX_SHARE = 0.01  # more rows than this share out of line: the .npz is not this shard's


def model_id(name: str) -> str:
    from curate.models import model_id_for

    arch, tag, _ = MODELS[name]
    return model_id_for(arch, tag)


def npz_path(parquet: str) -> Path:
    return Path(parquet).with_suffix(".npz")


def npz_headers(path: str | Path, name: str | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
    """{array name: (shape, dtype)} from an .npz's member headers (no array data read; an object
    on a store is read in place: its directory and a 64 KiB block per member); errors name the
    file as ``name`` (its URI) when given."""
    out = {}
    try:
        with storage.open_random(path) as src, zipfile.ZipFile(src) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
                out[member[:-4]] = (tuple(shape), str(dtype))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise InputFileError(name or str(path), f"not a readable .npz ({e})") from e
    return out


def _find_npz(f: dict) -> tuple[str, str, int, int] | None:
    """(file read, name, mtime ns, bytes) of an input shard's .npz, or None, from one metadata
    lookup. An input named by URI: the object beside it on the store (``<shard>.npz``), read
    in place like the shard."""
    source = f.get("source", f["path"])
    if storage.is_uri(source):
        uri = source[:-len(".parquet")] + ".npz" if source.endswith(".parquet") else source + ".npz"
        info = file_info(storage.resolve(uri))
        return (uri, uri, info.mtime_ns, info.size) if info.type == pafs.FileType.File else None
    npz = npz_path(f["path"])
    if not npz.is_file():
        return None
    st = npz.stat()
    return (str(npz), str(npz), st.st_mtime_ns, st.st_size)


def _shard_facts(item: tuple[dict, tuple]) -> tuple[dict, int, pa.Schema]:
    """An input shard's .npz headers and its Parquet row count and schema (footer)."""
    f, (npz, npz_name, _, _) = item
    heads = npz_headers(npz, npz_name)
    meta = pq.ParquetFile(storage.open_input(f["path"]))  # an input object: its footer, read in place
    return heads, meta.metadata.num_rows, meta.schema_arrow


def plan_npz_import(inputs: list[dict]) -> dict:
    """Check every input shard's .npz from its headers; returns the import plan.

    ``inputs``: [{"path", "file_index", "source"?}] of the pool's Parquet shards (``path`` the
    file read, ``source`` the name the user gave, if another). The plan lists the models found
    (name -> dim), one task per shard, and the .npz fingerprints (size, mtime).
    """
    # on a store each shard's checks are a few round trips, and a pool has thousands of shards
    found_npz = storage.map_objects(_find_npz, inputs)
    have = [n is not None for n in found_npz]
    if not any(have):
        return {"models": {}, "tasks": [], "npz": []}
    if not all(have):
        missing = inputs[have.index(False)]
        name = missing.get("source", missing["path"])
        raise InputFileError(name, f"DataComp shard without its embeddings file {npz_path(name).name} "
                             f"({have.count(False)} of {len(have)} shards lack one)")
    models: dict[str, int] | None = None
    tasks, fingerprints = [], []
    facts = storage.map_objects(_shard_facts, list(zip(inputs, found_npz)))
    for f, (npz, npz_name, mtime_ns, size), (heads, rows, schema) in zip(inputs, found_npz, facts):
        shard_name = f.get("source", f["path"])
        found = {}
        for name in MODELS:
            img, txt = heads.get(f"{name}_img"), heads.get(f"{name}_txt")
            if img is None and txt is None:
                continue
            if img is None or txt is None:
                raise InputFileError(npz_name, f"has {name}_{'img' if img else 'txt'} but not "
                                     f"{name}_{'txt' if img else 'img'}")
            for key, (shape, dtype) in ((f"{name}_img", img), (f"{name}_txt", txt)):
                if len(shape) != 2 or not dtype.lstrip("<>=|").startswith("f"):
                    raise InputFileError(npz_name, f"{key} must be a 2-D float array, got {dtype} of shape {shape}")
            if img[0] != txt[0]:
                raise InputFileError(npz_name, f"{name}_img shape {img[0]} and {name}_txt shape {txt[0]} differ")
            found[name] = img[0]
        if not found:
            raise InputFileError(npz_name, f"no embeddings (expected {', '.join(k + '_img/_txt' for k in MODELS)}; "
                                 f"found {sorted(heads)})")
        for name, shape in found.items():
            if shape[0] != rows:
                raise InputFileError(npz_name, f"{name}_img has {shape[0]} rows, {storage.basename(shard_name)} "
                                     f"has {rows}")
            if MODELS[name][2] not in schema.names:
                raise InputFileError(shard_name, f"no column {MODELS[name][2]} for the {name} embeddings of "
                                     f"{storage.basename(npz_name)}")
        dims = {name: int(shape[1]) for name, shape in found.items()}
        if models is None:
            models = dims
        elif dims != models:
            raise InputFileError(npz_name, f"embeddings {dims} (name: dim) differ from the first shard's {models}")
        fingerprints.append({"path": npz_name, "bytes": size, "mtime": mtime_ns / 1e9})
        tasks.append({"path": f["path"], "npz": npz, "npz_source": npz_name, "file_index": f["file_index"],
                      "rows": rows})
    return {"models": models or {}, "tasks": tasks, "npz": fingerprints}


# ---------------------------------------------------------------- the per-shard task
def _removed_rows(root: str, source: str) -> np.ndarray:
    """Input rows of ``source`` that ingest rejected or merged into an earlier row."""
    ds = Dataset(root)
    out = []
    for table in ("rejects", "duplicates"):
        # Both tables are sorted by (source_file, source_row): the filter skips other files' row groups.
        for shard in ds.shards(table):
            t = storage.read_parquet(shard, columns=["source_row"], filters=[("source_file", "=", source)])
            out.append(t.column(0).to_numpy())
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


def _sample_uids(path: str, uid: pa.Array) -> pa.Array:
    """The samples uid of every row, as ingest assigns it (input uid, else derived)."""
    if not uid.null_count:
        return pc.utf8_lower(pc.utf8_trim_whitespace(uid))
    from curate.text import normalize_text
    from curate.uid import derive_uids

    t = pq.read_table(storage.open_input(path), columns=["url", "text"])  # an input object: read in place
    url = pc.utf8_trim_whitespace(t.column("url").combine_chunks())
    text = normalize_text(t.column("text").combine_chunks())
    derived = derive_uids(url.fill_null("").to_pylist(), text.fill_null("").to_pylist())
    return pc.coalesce(pc.utf8_lower(pc.utf8_trim_whitespace(uid)), derived)


def _check_rows(npz: str, name: str, img: np.ndarray, txt: np.ndarray, scores: np.ndarray,
                uids: list[str] | None, npz_uids) -> dict:
    """Refuses non-finite vectors, a uid order that differs, and a shard whose scores mostly do
    not line up with its vectors; returns ``{"rows_off": n, "first_off": ...}`` for the rows
    (at most ``ALIGN_MAX_SHARE``) whose shipped score is not the cosine of their vectors: the
    job warns of them (a correct shard has none; a few rows swapped would pass the share)."""
    for key, x in ((f"{name}_img", img), (f"{name}_txt", txt)):
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputFileError(npz, f"{key} row {row} (uid {uids[row] if uids else '?'}): not a finite vector "
                                 f"({int(bad.sum())} such rows)")
    if npz_uids is not None:
        if len(npz_uids) != len(uids) or any(a != b for a, b in zip(npz_uids, uids)):
            row = next((i for i, (a, b) in enumerate(zip(npz_uids, uids)) if a != b), min(len(npz_uids), len(uids)))
            raise InputFileError(npz, f"uid order differs from the Parquet shard at row {row}")
        return {"rows_off": 0}
    a, b = img.astype(np.float32), txt.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ok = np.isfinite(scores) & np.isfinite(cos)
    off = ok & (np.abs(scores - cos) > ALIGN_TOLERANCE)
    if off.sum() > int(ALIGN_MAX_SHARE * ok.sum()):
        row = int(np.flatnonzero(off)[0])
        raise InputFileError(npz, f"rows do not line up with the Parquet shard ({int(off.sum())} of {int(ok.sum())} "
                             f"rows off; row {row}: shipped {MODELS[name][2]} {scores[row]:.4f}, cosine of its "
                             f"{name} vectors {cos[row]:.4f}): wrong .npz, or rows in another order")
    if not off.any():
        return {"rows_off": 0}
    row = int(np.flatnonzero(off)[0])
    return {"rows_off": int(off.sum()), "first_off": f"{storage.basename(npz)} row {row} (uid "
            f"{uids[row] if uids else '?'}): shipped {scores[row]:.4f}, cosine of its vectors {cos[row]:.4f}"}


def _fsl(x: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float16).reshape(-1), pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def import_npz_task(task: dict) -> dict:
    """Write this shard's part of every ``embeddings/<model>`` table (skipped when committed)."""
    ds = Dataset(task["root"])
    outs = {name: ds.shard_path(f"embeddings/{mid}", task["file_index"]) for name, mid in task["tables"].items()}
    if all(storage.committed(p) for p in outs.values()):
        return {"rows": {name: storage.parquet_file(p).metadata.num_rows for name, p in outs.items()}, "skipped": 1}
    path = storage.local_input(task["path"], task["source"])
    npz = task["npz"]  # a local file, or the object read in place
    npz_name = task.get("npz_source", npz)  # errors name the inputs as the user did
    score_cols = [MODELS[name][2] for name in outs]
    try:
        meta = pq.read_table(storage.open_input(path), columns=["uid", *score_cols])
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(task["source"], f"cannot read columns uid, {', '.join(score_cols)} ({e})") from e
    raw_uid = meta.column("uid").combine_chunks().cast(pa.string())
    uids = _sample_uids(path, raw_uid)
    keep = np.ones(meta.num_rows, dtype=bool)
    removed = _removed_rows(task["root"], task["source"])
    keep[removed[removed < meta.num_rows]] = False
    with _npz_arrays(npz, npz_name) as (members, member):
        return _write_parts(task, outs, members, member, npz_name, meta, uids, keep)


# an archive or member numpy cannot read (a bad deflate stream is zlib's own error)
NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _npz_arrays(npz: str, npz_name: str):
    """(member names, ``member(name)``) of the shard's open .npz, read on demand; an archive or
    member that cannot be read is one line naming the file (a failure writing the tables stays
    what it is)."""
    with contextlib.ExitStack() as stack:
        try:
            arrays = stack.enter_context(storage.open_npz(npz))
        except NPZ_ERRORS as e:
            raise InputFileError(npz_name, f"not a readable .npz ({e})") from e

        def member(key: str) -> np.ndarray:
            try:
                return arrays[key]
            except NPZ_ERRORS as e:
                raise InputFileError(npz_name, f"not a readable .npz ({key}: {e})") from e

        yield arrays.files, member


def _write_parts(task: dict, outs: dict, members: list[str], member, npz_name: str, meta: pa.Table,
                 uids: pa.Array, keep: np.ndarray) -> dict:
    """Check the shard's arrays (``member(name)``, one model at a time) and commit its part of
    each table."""
    npz_uids = None
    if "uid" in members:
        u = member("uid")
        npz_uids = ([f"{int(hi):016x}{int(lo):016x}" for hi, lo in u.tolist()] if u.dtype.names
                    else [str(x).strip().lower() for x in u.tolist()])
    uid_list = uids.to_pylist()
    idx = pa.array(np.flatnonzero(keep))
    kept_uids = uids.take(idx)
    written, checks = {}, {}
    for name, out in outs.items():
        img, txt = member(f"{name}_img"), member(f"{name}_txt")
        if len(img) != meta.num_rows or len(txt) != meta.num_rows:
            raise InputFileError(npz_name, f"{name} arrays have {len(img)}/{len(txt)} rows, "
                                 f"{storage.basename(task['source'])} has "
                                 f"{meta.num_rows}")
        if img.shape[1] != task["dims"][name] or txt.shape[1] != task["dims"][name]:
            raise InputFileError(npz_name, f"{name} dims {img.shape[1]}/{txt.shape[1]}, expected {task['dims'][name]}")
        col = meta.column(MODELS[name][2]).combine_chunks()
        scores = col.cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        checks[name] = _check_rows(npz_name, name, img, txt, scores, uid_list, npz_uids)
        if pa.types.is_floating(col.type) and col.type.bit_width > 32:  # stored as float32, as DataComp's are
            given = col.fill_null(np.nan).to_numpy(zero_copy_only=False)
            given, stored = given[keep], scores[keep].astype(np.float64)
            checks[name]["scores_rounded"] = int(np.count_nonzero(np.isfinite(given) & (stored != given)))
        schema = load_schema("embeddings").arrow(img.shape[1])
        k = np.flatnonzero(keep)
        table = pa.Table.from_arrays([kept_uids, _fsl(img[k]), _fsl(txt[k]), pa.array(scores[k], pa.float32())],
                                     schema=schema)
        # Fixed options; no dictionaries (vectors and uids are unique) and no min/max statistics
        # on the vectors (nothing filters on them): 5x less CPU than the defaults.
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp, row_group_size=65536, **{**PARQUET_OPTIONS, "use_dictionary": False,
                                                               "write_statistics": ["uid", "clip_score"]})
        written[name] = table.num_rows
    return {"rows": written, "skipped": 0, "checks": checks}


def _checks_said(name: str, mid: str, checks: list[dict]) -> dict:
    """The shards' score checks summed, each kind said in one warning line (a resumed shard's
    were said when it was imported)."""
    from curate.progress import info

    out, column = {}, MODELS[name][2]
    off = sum(c.get("rows_off", 0) for c in checks)
    if off:
        first = next(c["first_off"] for c in checks if c.get("rows_off"))
        out["rows_off"] = off
        info(f"ingest: warning: embeddings/{mid}: {off:,} rows' shipped {column} is not the cosine of their "
             f"{name} vectors (more than {ALIGN_TOLERANCE} apart; first: {first}): those vectors may be another "
             "row's (a correct .npz has none)")
    rounded = sum(c.get("scores_rounded", 0) for c in checks)
    if rounded:
        out["scores_rounded"] = rounded
        info(f"ingest: warning: embeddings/{mid}: {column} is float64 in the input; {rounded:,} scores change "
             "when stored as float32 (clip_score, as DataComp ships it), and thresholds compare the float32 values")
    return out


def run_npz_import(dataset: Dataset, plan: dict, executor, sources: list[str], kept_samples: int,
                   resume: bool, runs_dataset: Dataset | None = None) -> dict:
    """Import every shard's .npz into ``dataset`` (where this ingest run writes its tables;
    see ``import_npz_task``); checks each table has one row per sample; writes an embed-style
    run manifest per model to ``runs_dataset`` (default: ``dataset``). Returns outputs per table."""
    from curate.manifest import RunManifest

    if not plan["models"]:
        return {}
    tables = {name: model_id(name) for name in plan["models"]}
    if not resume:
        for mid in tables.values():
            storage.remove_tree(dataset.table_dir(f"embeddings/{mid}"))
    tasks = [{**t, "root": str(dataset.root), "source": sources[t["file_index"]], "tables": tables,
              "dims": plan["models"]} for t in plan["tasks"]]
    dataset.remove_temp_files(*(f"embeddings/{mid}" for mid in tables.values()))  # a killed run's parts
    results = executor.map_tasks(tasks, import_npz_task, "import DataComp embeddings")
    outputs = {}
    for name, mid in tables.items():
        rows = sum(r["rows"][name] for r in results)
        if rows != kept_samples:
            raise DatasetError(f"embeddings/{mid}: {rows} rows imported for {kept_samples} samples")
        outputs[f"embeddings/{mid}"] = {"rows": rows, "shards": len(tasks),
                                        "skipped_shards": sum(r["skipped"] for r in results),
                                        **_checks_said(name, mid, [r.get("checks", {}).get(name, {}) for r in results])}
        arch, tag, column = MODELS[name]
        m = RunManifest("embed", {"model": arch, "pretrained": tag, "model_id": mid, "source": "datacomp npz",
                                  "npz_arrays": [f"{name}_img", f"{name}_txt"], "score_column": column})
        m["counts"] = {"model_id": mid, "embedded": rows, "dim": plan["models"][name]}
        m["outputs"] = {"embeddings": f"embeddings/{mid}"}
        m.write(runs_dataset or dataset, name=f"embed-{mid}")
    return outputs
