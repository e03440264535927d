"""Trained scorers by name: ``DATASET/scorers/<name>/scorer.json`` (written by ``curate scorer train``).

A scorer is a filtering CLIP (a DFN) trained on a trusted seed set. Its folder holds the training
run (``run/``: open_clip_train's log, checkpoints, ``model.pt``, ``train.json``) and the manifest
``scorer.json`` (architecture, weights, seed set, training figures). Wherever a model is named
(``curate embed DS --model NAME``, a recipe's ``embedding_model``), :func:`resolve_scorer` turns
the name into the open_clip architecture and checkpoint; the embeddings it gives are the
ordinary ``embeddings/<model_id>/`` table of that checkpoint (:func:`curate.models.model_id_for`).

A scorer is named by its name in ``DATASET/scorers/``, or by the path of a scorer folder (or of
its ``scorer.json``) anywhere, e.g. one trained for another dataset.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from curate.models import ModelError

SCORERS_DIR = "scorers"
MANIFEST = "scorer.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class ScorerRef:
    """A trained scorer: what ``load_model`` needs, and where it came from."""

    name: str
    folder: Path
    arch: str          # open_clip model name (e.g. curate-tiny)
    checkpoint: Path   # weights_only-loadable state dict
    manifest: dict

    @property
    def model_id(self) -> str:
        """The id of the embeddings this scorer writes (``embeddings/<model_id>/``)."""
        from curate.models import model_id_for

        return model_id_for(self.arch, str(self.checkpoint))


def check_scorer_name(name: str) -> str:
    """A scorer name is a folder name: letters, digits, ``.``, ``_``, ``-``; never an open_clip model's."""
    from curate.models import list_models

    if not _NAME_RE.match(name or "") or name in (".", ".."):
        raise ModelError(f"scorer name {name!r}: use letters, digits, '.', '_' or '-' (at most 100, no '/')")
    if name in list_models():
        raise ModelError(f"scorer name {name!r} is an open_clip model name; choose another (e.g. dfn-{name})")
    return name


def scorer_folder(dataset_root: str | os.PathLike, name: str) -> Path:
    return Path(dataset_root) / SCORERS_DIR / check_scorer_name(name)


def read_scorer(folder: str | os.PathLike) -> ScorerRef:
    """The scorer in ``folder`` (or the folder of a ``scorer.json`` path). A URI folder (a
    scorer trained on a dataset in a bucket) is read through ``curate.storage``; its weights are
    copied to the local input cache (``storage.local_copy``: refetched only when the object
    changed), since open_clip loads a local file; the model id hashes the content, so it is the
    same as for the folder on disk."""
    from curate import storage

    if storage.is_uri(folder):
        uri = str(folder).rstrip("/")
        path = uri if storage.basename(uri) == MANIFEST else storage.join(uri, MANIFEST)
        parent = path[: -len(MANIFEST) - 1]
        try:
            m = json.loads(storage.read_bytes(path))
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: not a readable scorer manifest ({type(e).__name__}: {e})") from e
        ckpt_uri = storage.join(parent, m.get("checkpoint", ""))
        if not m.get("arch") or not m.get("checkpoint") or not storage.is_file(ckpt_uri):
            raise ModelError(f"{path}: scorer {m.get('name', '?')!r} has no weights at {ckpt_uri} (train it again "
                             f"with `curate scorer train`)")
        return ScorerRef(name=m.get("name") or storage.basename(parent), folder=parent, arch=m["arch"],
                         checkpoint=Path(storage.local_copy(ckpt_uri)), manifest=m)
    folder = Path(folder)
    path = folder if folder.name == MANIFEST else folder / MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable scorer manifest ({type(e).__name__}: {e})") from e
    ckpt = Path(m.get("checkpoint", ""))
    ckpt = ckpt if ckpt.is_absolute() else path.parent / ckpt
    if not m.get("arch") or not ckpt.is_file():
        raise ModelError(f"{path}: scorer {m.get('name', '?')!r} has no weights at {ckpt} (train it again with "
                         f"`curate scorer train`)")
    return ScorerRef(name=m.get("name") or path.parent.name, folder=path.parent, arch=m["arch"], checkpoint=ckpt,
                     manifest=m)


def resolve_scorer(name: str, dataset_root: str | os.PathLike | None = None) -> ScorerRef | None:
    """The scorer ``name`` means, or None when it names none.

    ``name`` is a scorer in ``DATASET/scorers/`` (when ``dataset_root`` is given) or the path of a
    scorer folder / ``scorer.json``. Anything else (an open_clip model name, an embeddings id)
    gives None, so a model-id resolver can try scorers first and fall through.
    """
    from curate import storage

    if not name:
        return None
    if storage.is_uri(name):  # a scorer folder or scorer.json in a bucket
        uri = name.rstrip("/")
        return read_scorer(uri) if storage.is_file(uri if storage.basename(uri) == MANIFEST
                                                    else storage.join(uri, MANIFEST)) else None
    p = Path(name)
    if (p.is_dir() and (p / MANIFEST).is_file()) or (p.name == MANIFEST and p.is_file()):
        return read_scorer(p)
    if dataset_root is not None and _NAME_RE.match(name):
        if storage.is_uri(dataset_root):
            folder = storage.join(str(dataset_root), SCORERS_DIR, name)
            return read_scorer(folder) if storage.is_file(storage.join(folder, MANIFEST)) else None
        folder = Path(dataset_root) / SCORERS_DIR / name
        if (folder / MANIFEST).is_file():
            return read_scorer(folder)
    return None


def list_scorers(dataset_root: str | os.PathLike) -> list[str]:
    from curate import storage

    if storage.is_uri(dataset_root):
        d = storage.join(str(dataset_root), SCORERS_DIR)
        if not storage.is_dir(d):
            return []
        return sorted({f[len(d) + 1:].split("/")[0] for f in storage.list_files(d, recursive=True)
                       if f[len(d) + 1:].endswith("/" + MANIFEST) and f[len(d) + 1:].count("/") == 1})
    d = Path(dataset_root) / SCORERS_DIR
    return sorted(p.name for p in d.iterdir() if (p / MANIFEST).is_file()) if d.is_dir() else []


def embeddings_id(name: str | None, dataset_root: str | os.PathLike) -> str | None:
    """The embeddings table id ``name`` means in a dataset: itself when ``embeddings/<name>``
    exists or it names no scorer, else the scorer's ``model_id`` (a recipe's ``embedding_model:
    dfn``, ``curate select --embedding-model dfn``)."""
    from curate import storage

    if not name or storage.is_dir(storage.join(dataset_root, "embeddings", name)):
        return name
    scorer = resolve_scorer(name, dataset_root)
    return scorer.model_id if scorer is not None else name
