"""One resolver for what users pass as ``--model`` / ``--embeddings``, used by every command.

A model spec is any of:

- an embeddings table id as ``curate embed`` writes it (``curate-tiny__random-seed0``,
  ``ViT-B-32__laion2b_s34b_b79k``, ``curate-tiny__model-3f2a...``), with or without the
  ``embeddings/`` prefix;
- an open_clip model name, optionally with a pretrained tag or checkpoint as ``NAME:TAG``
  (or given separately with ``--pretrained``);
- a checkpoint file (``curate train``'s ``model.pt``, an open_clip_train checkpoint), whose
  architecture comes from the ``train.json`` beside it or the checkpoint's ``arch`` entry.

``resolve_embeddings`` turns a spec into the id of an existing embeddings table of a dataset
(for the jobs that read embeddings; a one-line error listing the tables when it names none
or several); ``resolve_model`` turns it into (name, pretrained, seed)
for ``load_model`` (for the jobs that embed images), going through the embed run's manifest
when the spec names an embeddings table. Neither loads weights: both run before any Spark job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from curate.models import ModelError, file_digest, model_id_for, register_configs

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class ModelRef:
    name: str
    pretrained: str | None
    seed: int = 0

    @property
    def model_id(self) -> str:
        return model_id_for(self.name, self.pretrained, self.seed)


def embeddings_ids(dataset) -> list[str]:
    if not dataset.exists():
        return []
    return sorted(t.split("/", 1)[1] for t in dataset.tables() if t.startswith("embeddings/"))


def _listing(ids: list[str]) -> str:
    return ", ".join(ids) if ids else "none; run `curate embed` first"


def _known_name(name: str) -> bool:
    import open_clip

    register_configs()
    return open_clip.get_model_config(name) is not None


def _split(spec: str, pretrained: str | None) -> tuple[str, str | None]:
    """``NAME:TAG`` -> (NAME, TAG); a separate ``pretrained`` wins."""
    from curate import storage

    if pretrained is None and ":" in spec and not spec.startswith(("hf-hub:", "local-dir:")) \
            and not os.path.exists(spec) and not storage.is_uri(spec):
        name, tag = spec.split(":", 1)
        return name, tag or None
    return spec, pretrained


def _looks_like_checkpoint(spec: str) -> bool:
    from curate import storage

    return storage.is_uri(spec) or os.path.isfile(spec) or os.sep in spec or spec.endswith(_CHECKPOINT_SUFFIXES)


def checkpoint_arch(path: str) -> str:
    """The architecture of a checkpoint file (local or a URI): train.json beside it or in the
    folder above (a `curate train` run), else the checkpoint's ``arch``."""
    from curate import storage
    from curate.evaluate.tasks import _find_train_info
    from curate.models.factory import checkpoint_file

    if storage.is_uri(path):
        info = _train_info_beside(path)
        p = Path(checkpoint_file(path))
    else:
        p = Path(path).resolve()
        info = _find_train_info(p) or {}
    if info.get("model"):
        return str(info["model"])
    import torch

    try:
        arch = torch.load(p, map_location="cpu", weights_only=True).get("arch")
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ModelError(f"checkpoint {path}: cannot read it ({type(e).__name__}: {str(e)[:200]})") from e
    if not arch:
        raise ModelError(f"checkpoint {path}: no train.json beside it and no 'arch' entry; "
                         f"pass the architecture as NAME:{path}")
    return str(arch)


def _train_info_beside(uri: str) -> dict:
    import json

    from curate import storage

    folder = uri.rsplit("/", 1)[0]
    for d in (folder, folder.rsplit("/", 1)[0]):
        p = storage.join(d, "train.json")
        if storage.is_file(p):
            return json.loads(storage.read_bytes(p))
    return {}


def resolve_embeddings(dataset, spec: str | None, pretrained: str | None = None) -> str:
    """The id of the embeddings table of ``dataset`` that ``spec`` names (see the module doc);
    with no spec, the only one. A one-line DatasetError listing the tables otherwise."""
    from curate.errors import DatasetError

    from curate.models.scorers import resolve_scorer

    ids = embeddings_ids(dataset)
    if not spec:
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise DatasetError(f"{dataset.root} has no embeddings table; run `curate embed` first")
        raise DatasetError(f"{dataset.root} has {len(ids)} embeddings tables ({', '.join(ids)}); "
                           f"choose one with --embeddings ID")
    s = spec[len("embeddings/"):] if spec.startswith("embeddings/") else spec
    if s in ids and pretrained is None:
        return s
    scorer = resolve_scorer(s, dataset.root) if pretrained is None else None
    if scorer is not None:  # a trained scorer (`curate scorer train`): the embeddings it wrote
        if scorer.model_id in ids:
            return scorer.model_id
        raise DatasetError(f"no embeddings of scorer {scorer.name} in {dataset.root} (tables: {_listing(ids)}); "
                           f"run `curate embed DATASET --model {s}`")
    name, tag = _split(s, pretrained)
    if tag is None and os.path.isfile(name):  # a checkpoint file: its content hash is in the id
        suffix = f"-{file_digest(name)}"
        hits = [i for i in ids if i.endswith(suffix)]
        if len(hits) == 1:
            return hits[0]
        raise DatasetError(f"no embeddings table of {dataset.root} was made with checkpoint {name} "
                           f"(tables: {_listing(ids)}); run `curate embed DATASET --model {name}`")
    if tag is not None:
        want = model_id_for(name, tag)
        if want in ids:
            return want
        raise DatasetError(f"no embeddings table {want} in {dataset.root} (tables: {_listing(ids)})")
    hits = [i for i in ids if i.startswith(f"{name}__")]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise DatasetError(f"model {name} has {len(hits)} embeddings tables in {dataset.root} ({', '.join(hits)}); "
                           f"choose one with --embeddings ID")
    raise DatasetError(f"table embeddings/{s} not found in {dataset.root} (embeddings tables: {_listing(ids)})")


def _from_model_id(model_id: str, dataset=None) -> ModelRef | None:
    """(name, weights, seed) behind an embeddings id: the embed run's manifest, else the id's form."""
    if dataset is not None:
        from curate.manifest import read_manifest

        run = read_manifest(dataset, f"embed-{model_id}") if dataset.exists() else None
        p = (run or {}).get("params") or {}
        if p.get("model"):
            return ModelRef(p["model"], p.get("pretrained"), int(p.get("seed") or 0))
    name, sep, suffix = model_id.partition("__")
    if not sep or not _known_name(name):
        return None
    if suffix.startswith("random-seed") and suffix[len("random-seed"):].isdigit():
        return ModelRef(name, None, int(suffix[len("random-seed"):]))
    from curate.models import list_pretrained_tags

    if suffix in list_pretrained_tags(name):
        return ModelRef(name, suffix, 0)
    return None


def resolve_model(spec: str, pretrained: str | None = None, seed: int = 0, dataset=None) -> ModelRef:
    """(name, pretrained, seed) for ``load_model`` from any model spec (see the module doc).
    Checks the name and that a pretrained tag or checkpoint exists, without loading weights."""
    from curate.models.scorers import resolve_scorer

    s = spec[len("embeddings/"):] if spec.startswith("embeddings/") else spec
    scorer = resolve_scorer(s, dataset.root if dataset is not None else None)
    if scorer is not None and pretrained is not None and not _known_name(s):
        raise ModelError(f"{s} is a scorer, with its own weights ({scorer.checkpoint}); drop --pretrained, or name "
                         "an open_clip architecture to load other weights into")
    if scorer is not None and pretrained is None:  # a trained scorer (`curate scorer train`): its arch and weights
        return check_ref(ModelRef(scorer.arch, str(scorer.checkpoint), 0))
    if pretrained is None and "__" in s:
        ref = _from_model_id(s, dataset)
        if ref is None:
            where = f" (no _runs/embed-{s}.json in {dataset.root})" if dataset is not None else ""
            raise ModelError(f"cannot tell which model made embeddings {s}{where}; pass the open_clip name "
                             f"and --pretrained instead")
        ref = check_ref(ref)
        if ref.pretrained is not None and _is_local_file(ref.pretrained):
            now = ref.model_id  # the weights the recorded checkpoint holds today
            if now != s:
                raise ModelError(f"embeddings {s} were made from {ref.pretrained or ref.name}, which now holds other "
                                 f"weights (embeddings {now}); name the model and checkpoint you mean with --model "
                                 "and --pretrained")
        return ref
    name, tag = _split(s, pretrained)
    if (tag is None and not name.startswith(("hf-hub:", "local-dir:")) and _looks_like_checkpoint(name)
            and not _known_name(name)):
        from curate import storage

        if not (storage.is_file(name) if storage.is_uri(name) else os.path.isfile(name)):
            raise ModelError(f"checkpoint {name} does not exist")
        return check_ref(ModelRef(checkpoint_arch(name), name, seed))
    return check_ref(ModelRef(name, tag, seed))


def _is_local_file(path: str) -> bool:
    from curate import storage

    return not storage.is_uri(path) and os.path.isfile(path)


def check_ref(ref: ModelRef) -> ModelRef:
    """A ModelError unless ``ref``'s name is known and its weights are a file or a pretrained tag."""
    from curate.models import check_model

    check_model(ref.name, ref.pretrained)
    return ref


def model_spec_callback(ctx, param, value):  # untyped: typer passes (ctx, param, value) by position
    """Typer callback for ``--model``/``--embeddings``: an existing checkpoint file, or a safe
    name (``NAME``, ``NAME:TAG``, an embeddings id, optionally ``embeddings/ID``) checked by
    curate.names while parsing. The table a job then reads is always one listed from the
    dataset (``resolve_embeddings``), never a path built from the raw value."""
    from curate.names import check_name

    if value is None:
        return value
    opts = getattr(param, "opts", None) or []
    what = "--model" if "--model" in opts else (max(opts, key=len) if opts else "--model")
    v = value[len("embeddings/"):] if value.startswith("embeddings/") else value
    from curate import storage

    if os.path.isfile(v) or storage.is_uri(v):  # a checkpoint file (a URI: checked when it is read)
        return value
    name, sep, tag = v.partition(":")
    check_name(name, what, reserved=False)
    if sep and tag and not os.path.isfile(tag) and not storage.is_uri(tag):
        check_name(tag, what, reserved=False)
    return value
