"""Checks a filter run makes before any data pass (samples columns, the embeddings tables the
filters read, image_based paths), and which embeddings table a filter reads."""

from __future__ import annotations

import glob
from pathlib import Path

import pyarrow as pa

from curate import storage
from curate.errors import DatasetError, InputFileError
from curate.filters.stages import FilterSpec
from curate.tables import Dataset


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
        except DatasetError as e:  # its message names the table looked for and the ones there
            raise DatasetError(f"filter {spec.name}: {e}; run `curate embed` first") from None
    if len(tables) == 1:
        return _checked(dataset, tables[0])
    if not tables:
        raise DatasetError(f"filter {spec.name} needs CLIP embeddings but {dataset.root} has no "
                           "embeddings/<model> table; run `curate embed` first")
    raise DatasetError(f"filter {spec.name}: several embedding tables ({', '.join(tables)}); "
                       f"choose one with {spec.name}:model=NAME")


# the filter parameters that name a file (image_based's, text_based's), and what their error says
# when it is not there; the recipe stages find these files beside the recipe too
NAMED_FILES = {"target": "image_based target does not exist", "centroids": "image_based centroids does not exist",
               "synsets": "synset list not found"}


def check_filters(dataset: Dataset, specs: list[FilterSpec], lid_model: str | None = None) -> None:
    """Every check that needs no data pass: samples table, embeddings tables the filters read,
    the language each filter asks for, image_based target paths and dims, the model that would
    embed a target folder, text_based's synset list and WordNet. Run before an engine starts (a
    JVM takes seconds) and before the fastText pass over the pool (the long step)."""
    if not dataset.exists():
        raise DatasetError(f"dataset {dataset.root} does not exist")
    check_samples(dataset)
    for spec in specs:  # the files the user named first: a typo is said before the dataset's missing tables
        for key, what in NAMED_FILES.items():
            if spec.params.get(key) and not _exists(spec.params[key]):
                raise InputFileError(str(spec.params[key]), what)
    for spec in specs:
        p = spec.params
        table = resolve_model(dataset, p.get("model"), spec) if spec.name in ("clip_score", "laion2b",
                                                                               "image_based") else None
        if spec.name in ("basic", "image_based", "text_based") or (spec.name == "laion2b"
                                                                    and p.get("lang_id") == "fasttext"):
            _check_language(spec, lid_model)
        if spec.name == "image_based":
            _check_image_based(dataset, spec, table)
        if spec.name == "text_based" and p.get("synsets"):
            from curate.filters.decide import read_synset_offsets
            from curate.wordnet import check_wordnet

            check_wordnet(p.get("wordnet_dir"))
            read_synset_offsets(storage.local_copy(p["synsets"]), p.get("wordnet_dir"))  # its one-line errors


def _check_language(spec: FilterSpec, lid_model: str | None) -> None:
    """The label a filter requires is one the fastText model gives: another (``EN``,
    ``english``, empty) would remove every sample."""
    from curate.filters.langid import model_labels

    lang = spec.params.get("lang")
    labels = model_labels(lid_model)
    if lang not in labels:
        import difflib

        near = difflib.get_close_matches(str(lang).lower(), labels, n=3, cutoff=0.5)
        raise DatasetError(f"filter {spec.name}: lang={lang!r} is not a label the fastText model gives, so every "
                           f"sample would be removed; {'did you mean ' + ', '.join(near) + '? ' if near else ''}"
                           f"its {len(labels)} labels are codes such as en, de, zh")


def _check_image_based(dataset: Dataset, spec: FilterSpec, table: str) -> None:
    """A target file's dim is the pool's (from its header); a target folder's model resolves (the
    one that made the pool's embeddings embeds it). That the target and centroids exist is checked
    before, with the other files filters name. ``table``: the pool's embeddings table, resolved
    (and its shards checked) by the caller."""
    from curate.embedding_space.vectors import check_embedding_shards

    p = spec.params
    target = p.get("target")
    if not target or storage.is_uri(target):
        return
    t = Path(target)
    if t.is_dir() and not any(next(t.glob(f"*.{ext}"), None) for ext in ("parquet", "pt", "npy")):
        from curate.models.resolve import resolve_model as resolve_model_spec

        resolve_model_spec(table.split("/", 1)[1], dataset=dataset)  # the model that embeds the folder
        return
    dim = None
    if t.is_file() and t.suffix == ".npy":
        import numpy as np

        shape = np.load(t, mmap_mode="r").shape
        dim = shape[1] if len(shape) == 2 else None
    elif t.is_file() and t.suffix == ".parquet":
        schema = storage.parquet_file(str(t)).schema_arrow
        col = next((c for c in ("image_embedding", "embedding") if c in schema.names), None)
        typ = schema.field(col).type if col else None
        dim = getattr(typ, "list_size", None)
    pool = check_embedding_shards(dataset.shards(table))
    if dim is not None and pool is not None and dim != pool:
        raise InputFileError(str(t), f"image_based target embeddings have dim {dim}, {table} has {pool}")


def _exists(spec: str) -> bool:
    """A target/centroids path, URI or local glob names something."""
    if storage.is_uri(spec):
        return storage.exists(spec)
    return Path(spec).exists() or bool(any(c in spec for c in "*?[") and glob.glob(spec))


def check_samples(dataset: Dataset) -> list[Path] | list[str]:
    shards = dataset.shards("samples")
    if not shards:
        raise DatasetError(f"no samples table in {dataset.root}; run `curate ingest` first")
    want = {"uid": pa.string(), "text": pa.string()}
    for p in shards:
        try:
            sch = storage.parquet_file(p).schema_arrow
        except (pa.ArrowInvalid, OSError) as e:
            raise InputFileError(str(p), f"cannot read Parquet footer ({e})") from e
        for c in ("uid", "text", "original_width", "original_height"):
            if c not in sch.names:
                raise InputFileError(str(p), f"samples shard has no column {c!r}")
        for c, typ in want.items():
            if not sch.field(c).type.equals(typ) and not sch.field(c).type.equals(pa.large_string()):
                raise InputFileError(str(p), f"column {c!r} has type {sch.field(c).type}, expected string")
    return shards
