"""``curate scorer train``: a data-filtering network (DFN) trained on a trusted seed set.

After Apple's "Data Filtering Networks" (Fang et al., 2023): a CLIP model trained on a small set
of high-quality image-text pairs scores a large pool by its CLIP score (the cosine of its image
and text embeddings); filtering the pool on that score keeps pairs that look like the seed set.
curate trains the DFN with the reference trainer (open_clip_train, a scale preset; ``tiny`` by
default, which runs on a laptop CPU) and stores it as ``DATASET/scorers/<name>/``:

    scorer.json     manifest: name, arch, checkpoint, model_id, seed set, preset, samples seen, loss
    <name>.pt       the weights (a hard link to run/model.pt); embeddings/<arch>__<name>-<hash>/
    seed/           the seed set as WebDataset shards, when it had to be packed (image folder, subset)
    run/            the training run (out.log, checkpoints/, model.pt, train.json)

The seed set is one of:

- a folder of image files with captions beside them (``cat.jpg`` + ``cat.txt``), packed into
  shards; every file is counted: packed, or skipped with a reason (``seed/packing.json``);
- the name of a subset of the dataset (``curate select`` / a recipe), resharded into ``seed/``;
- WebDataset shards: a folder of ``.tar`` files, one ``.tar``, a brace pattern or ``::`` list,
  or a text file listing shard paths or URLs, one a line.

``curate embed DS --model <name>`` then embeds with the scorer (:mod:`curate.models.scorers`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from curate.errors import CurateError
from curate.manifest import code_version
from curate.models.scorers import MANIFEST, check_scorer_name, list_scorers
from curate.params.scorer import ScorerTrainParams  # noqa: F401 - the job's parameters (curate/params/)
from curate.tables import Dataset, atomic_write_bytes

IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
PACK_SHARD_SIZE = 10_000


class ScorerError(CurateError):
    """A scorer cannot be trained from what was given."""


# ---------------------------------------------------------------- seed sets
def seed_kind(dataset: Dataset, seed_set: str) -> str:
    """What ``seed_set`` is: ``images`` (image + caption files), ``subset``, ``webdataset`` or ``list``;
    a local path or a URI (a folder or file on object storage)."""
    from curate import storage

    if storage.is_uri(seed_set) and "{" not in seed_set and "::" not in seed_set:
        return _store_seed_kind(seed_set)
    p = Path(seed_set)
    if p.is_dir():
        if any(p.glob("*.tar")):
            return "webdataset"
        if any(q.suffix.lower() in IMAGE_EXTS for q in p.iterdir()):
            return "images"
        raise ScorerError(f"seed set {p}: a folder with neither .tar shards nor image files (with .txt captions)")
    if p.is_file():
        return "webdataset" if p.suffix == ".tar" else "list"
    if "{" in seed_set or "::" in seed_set:
        return "webdataset"
    from curate import storage

    if storage.exists(storage.join(dataset.root, "subsets", seed_set, "uids.parquet")):  # a URI dataset too
        return "subset"
    from curate.subset import list_subsets

    known = ", ".join(list_subsets(dataset)) or "none"
    raise ScorerError(f"seed set {seed_set!r} is neither a folder, a shard file or list, nor a subset of "
                      f"{dataset.root} (subsets: {known})")


def pack_image_folder(folder: Path, out: Path, shard_size: int = PACK_SHARD_SIZE) -> dict:
    """Image files with a ``<stem>.txt`` caption beside them -> WebDataset shards in ``out``.

    Sorted by file name, so the same folder packs into the same shards. Every file ends in one
    count: ``packed``, or ``no_caption`` / ``empty_caption`` / ``unreadable_image`` for an image,
    ``caption_without_image`` for a lone ``.txt``; other files are ``other_file``.
    """
    import webdataset as wds

    files = sorted(p for p in folder.iterdir() if p.is_file())
    stems_with_image = {p.stem for p in files if p.suffix.lower() in IMAGE_EXTS}
    counts = {"packed": 0, "no_caption": 0, "empty_caption": 0, "unreadable_image": 0,
              "caption_without_image": 0, "other_file": 0}
    skipped: list[dict] = []
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.tar"):
        old.unlink()
    sizes: dict[str, int] = {}
    writer, shard = None, -1
    digest = hashlib.sha256()  # of what is packed (the tars' headers carry the packing time)
    try:
        for p in files:
            sample = _pack_sample(p, stems_with_image)
            if sample is None:  # the caption of an image
                continue
            if isinstance(sample, str):
                counts[sample] += 1
                if len(skipped) < 1000:
                    skipped.append({"file": p.name, "reason": sample})
                continue
            ext, data, caption = sample
            if counts["packed"] % shard_size == 0:
                if writer is not None:
                    writer.close()
                shard += 1
                writer = wds.TarWriter(str(out / f"{shard:08d}.tar"), encoder=False)
                sizes[f"{shard:08d}.tar"] = 0
            writer.write({"__key__": f"{counts['packed']:09d}", ext: data, "txt": caption.encode("utf-8")})
            for part in (ext.encode(), data, caption.encode("utf-8")):
                digest.update(len(part).to_bytes(8, "little") + part)
            sizes[f"{shard:08d}.tar"] += 1
            counts["packed"] += 1
    finally:
        if writer is not None:
            writer.close()
    report = {"source": str(folder), "files": len(files), "counts": counts, "skipped": skipped,
              "digest": digest.hexdigest()[:32]}
    if not counts["packed"]:
        raise ScorerError(f"seed set {folder}: no image has a non-empty .txt caption beside it "
                          f"({json.dumps(counts)})")
    atomic_write_bytes(out / "sizes.json", json.dumps(sizes, sort_keys=True).encode())
    atomic_write_bytes(out / "packing.json", (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return report


def _pack_sample(p: Path, stems_with_image: set[str]) -> tuple[str, bytes, str] | str | None:
    """(extension, image bytes, caption) of an image file with its caption, the reason it is
    skipped, or None for a ``.txt`` caption beside an image."""
    import io

    from PIL import Image, UnidentifiedImageError

    ext = IMAGE_EXTS.get(p.suffix.lower())
    if ext is None:
        if p.suffix.lower() == ".txt":
            return None if p.stem in stems_with_image else "caption_without_image"
        return "other_file"
    cap = p.with_suffix(".txt")
    if not cap.is_file():
        return "no_caption"
    caption = cap.read_text(encoding="utf-8", errors="replace").strip()
    if not caption:
        return "empty_caption"
    data = p.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "unreadable_image"
    return ext, data, caption


def read_url_list(path: Path) -> list[str]:
    """Shard paths or URLs, one a line (blank lines and ``#`` comments skipped); relative paths
    are relative to the list file."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line if "://" in line or os.path.isabs(line) else str((path.parent / line).resolve()))
    if not out:
        raise ScorerError(f"seed set {path}: the shard list is empty")
    return out


def _store_seed_kind(uri: str) -> str:
    """``seed_kind`` of a URI: a folder of .tar shards (read in place by the trainer) or of
    image files, a .tar shard, or a list of shard URLs."""
    from curate import storage

    if storage.is_dir(uri):
        names = [storage.basename(f) for f in storage.list_files(uri)]
        if any(n.endswith(".tar") for n in names):
            return "webdataset"
        if any(Path(n).suffix.lower() in IMAGE_EXTS for n in names):
            return "images"
        raise ScorerError(f"seed set {uri}: a folder with neither .tar shards nor image files (with .txt captions)")
    if storage.is_file(uri):
        return "webdataset" if uri.endswith(".tar") else "list"
    raise ScorerError(f"seed set {uri}: no such file or folder")


def prepare_seed_set(dataset: Dataset, seed_set: str, folder: Path, executor=None,
                     pack: str = "seed") -> tuple[object, dict]:
    """The training input for ``seed_set`` and a description of it for the manifest (``digest``:
    of the pairs packed, or of the reshard's rows, where there is one). An image folder or a
    subset is packed into ``folder/pack``; an image folder or a list named by URI is copied to
    the input cache (a seed set of trusted pairs is small); shards on a store are read in place
    by the trainer."""
    from curate import storage

    kind = seed_kind(dataset, seed_set)
    if storage.is_uri(seed_set) and kind in ("images", "list"):
        source, seed_set = seed_set, storage.local_copy(seed_set)
    else:
        source = str(Path(seed_set).resolve()) if kind in ("images", "list") or Path(seed_set).exists() else seed_set
    desc: dict = {"kind": kind, "source": source}
    if kind == "images":
        rep = pack_image_folder(Path(seed_set), folder / pack)
        desc.update(samples=rep["counts"]["packed"], counts=rep["counts"], shards=str(folder / "seed"),
                    digest=rep["digest"])
        return folder / pack, desc
    if kind == "subset":
        from curate.reshard.job import reshard

        meta = reshard(dataset, subset=seed_set, output=folder / pack, shard_size=PACK_SHARD_SIZE,
                       overwrite=True, executor=executor)
        desc.update(samples=meta.get("counts", {}).get("written"), counts=meta.get("counts"),
                    shards=str(folder / "seed"), digest=meta.get("plan_hash"))
        return folder / pack, desc
    if kind == "list":
        urls = read_url_list(Path(seed_set))
        desc.update(shards=len(urls), digest=hashlib.sha256("\n".join(urls).encode()).hexdigest()[:32])
        return urls, desc
    desc.update(_shards_record(seed_set))
    return seed_set, desc


def _shards_record(seed_set: str) -> dict:
    """WebDataset shards given as a folder, a .tar or a brace/``::`` pattern: their count, the
    samples their sizes.json gives (when there is one), and a digest of every shard's name, size
    and modification time (nothing read), so that other shards under the same path are another
    seed set (they were taken for the trained one: the old weights came back)."""
    import webdataset as wds

    from curate.tables.fingerprint import path_fingerprint
    from curate.train.runner import resolve_train_data

    info = resolve_train_data(seed_set)  # its one-line errors: a missing shard, no usable sample
    prints = [path_fingerprint(p) for p in wds.shardlists.expand_urls(str(seed_set))]
    digest = hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()[:32]
    return {"shards": info["shards"], "samples": info["samples"] or None, "digest": digest}


# ---------------------------------------------------------------- training
def train_scorer(dataset: Dataset | str | os.PathLike, name: str, seed_set: str, *, preset: str = "tiny",
                 output: str | os.PathLike | None = None, executor=None, overwrite: bool = False,
                 **train_kwargs) -> dict:
    """Train the DFN ``name`` on ``seed_set``; returns (and writes) its ``scorer.json``.

    ``output``: the scorer folder (default ``DATASET/scorers/<name>``). ``train_kwargs`` go to
    :func:`curate.train.train` (seed, samples_seen, batch_size, device, threads, verbose ...).
    The same call again returns the finished scorer without training; ``overwrite`` retrains.
    """
    from curate import storage
    from curate.train.runner import train

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    if not storage.is_dir(ds.root):
        raise ScorerError(f"dataset folder {ds.root} does not exist")
    check_scorer_name(name)
    folder, remote = _scorer_folder(ds, name, output, overwrite)
    done = _finished_manifest(folder)  # a trained scorer here: the same seed set returns it
    data, desc = prepare_seed_set(ds, seed_set, folder, executor, pack="seed" if done is None else "seed.next")
    if done is not None:
        data, desc = _same_seed_set(name, done, data, desc, folder)
    t0 = time.perf_counter()
    ran = _finished_manifest(folder / "run", "train.json")
    info = train(data, folder / "run", preset, **train_kwargs)
    if done is not None and info == ran:  # the finished run returned as it was: its record too
        return done
    # the scorer's weights are named after it, so its embeddings are embeddings/<arch>__<name>-<hash>
    model_path = folder / f"{name}.pt"
    _link_or_copy(Path(info["checkpoint"]), model_path)
    manifest = _scorer_manifest(name, ds, desc, folder, model_path, info, wall_s=time.perf_counter() - t0)
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())
    if remote is not None:
        from curate.outputs import upload_folder

        upload_folder(folder, remote, last=(MANIFEST,))  # the manifest once its weights are there
    return manifest


def _finished_manifest(folder: Path, name: str = MANIFEST) -> dict | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def _same_seed_set(name: str, done: dict, data, desc: dict, folder: Path) -> tuple[object, dict]:
    """The scorer ``done`` was trained on this seed set (the same pairs: their digest, or for a
    scorer trained before digests, the same source and count): its packed input and record.
    Another seed set is refused before anything of the scorer changes (it returned the old
    weights under the new seed set's record)."""
    import shutil

    was = done.get("seed_set") or {}
    if isinstance(data, Path) and data.name == "seed.next":
        shutil.rmtree(data, ignore_errors=True)
        data = folder / "seed"
    counts = (was.get("samples"), desc.get("samples"))  # unknown for shards recorded before their digest
    same = (was.get("digest") == desc.get("digest") if was.get("digest") and desc.get("digest") else
            was.get("source") == desc.get("source") and (None in counts or counts[0] == counts[1]))
    if not same:
        def what(d: dict) -> str:
            return f"{d.get('source')}" + (f", {d['samples']:,} pairs" if isinstance(d.get("samples"), int) else "")

        raise ScorerError(f"scorer {name!r} was trained on another seed set ({what(was)}); this one is "
                          f"{what(desc)}: --overwrite retrains it, or give another --name")
    return data, {**desc, **{k: was[k] for k in ("shards",) if k in was}}


def _scorer_folder(ds: Dataset, name: str, output, overwrite: bool) -> tuple[Path, str | None]:
    """The local folder the scorer is made in, and the store URI it is uploaded to (or None).

    A scorer folder on a store (a URI dataset's scorers/NAME, or a URI output) is made in a
    local working folder, then every file of it uploaded whole (curate.outputs)."""
    from curate import storage

    remote = storage.join(str(ds.root), "scorers", name) if output is None and ds.remote else (
        storage.resolve(str(output)).uri if output is not None and storage.is_uri(output) else None)
    if remote is not None:
        from curate.train.output_uri import work_dir

        folder = work_dir(remote)
        if overwrite:
            storage.remove_tree(remote)
    else:
        folder = Path(output).resolve() if output else ds.root / "scorers" / name
    if overwrite and folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder, remote


def _scorer_manifest(name: str, ds: Dataset, seed_set_desc, folder: Path, model_path: Path, info: dict,
                     wall_s: float) -> dict:
    from curate.models import model_id_for

    return {
        "name": name,
        "kind": "dfn",
        "arch": info["model"],
        "checkpoint": os.path.relpath(model_path, folder),
        "model_id": model_id_for(info["model"], str(model_path)),
        "dataset": str(ds.root),
        "seed_set": seed_set_desc,
        "preset": info["preset"],
        "seed": info["seed"],
        "samples_seen": info["samples_seen"],
        "steps": info["steps"],
        "passes_over_data": info["passes_over_data"],
        "loss_first": info["loss_first"],
        "loss_last": info["loss_last"],
        "device": info["device"],
        "train_json": os.path.relpath(folder / "run" / "train.json", folder),
        "wall_s": round(wall_s, 2),
        "code": code_version(),
    }


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or no hard links there
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    # rename() onto a link of the same file does nothing, leaving the temporary name behind
    tmp.unlink(missing_ok=True)


__all__ = ["ScorerError", "train_scorer", "pack_image_folder", "prepare_seed_set", "seed_kind", "list_scorers"]
