"""``curate eval s3://bucket/run/model.pt`` (or the run folder): a checkpoint on object storage.

open_clip loads weights from a local file, and ``evaluate`` finds the run's ``train.json``
beside the checkpoint or one folder up. So the checkpoint is copied into the input cache
(kept while its size and modification time match: a rerun does not fetch it again) and laid
out with those ``train.json`` files as they are on the store; the results are written beside
the checkpoint's URI (``<stem>.eval.json``, one whole object) and record the URI, not the copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from curate import storage


def checkpoint_copy(uri: str) -> tuple[Path, str]:
    """(local path of the checkpoint laid out with its run's train.json, the checkpoint's URI)."""
    from curate.evaluate.tasks import EvalError
    from curate.tables.atomic import atomic_write_bytes

    ck = storage.resolve(uri).uri.rstrip("/")
    if not storage.is_file(ck):
        ck = storage.join(ck, "model.pt")  # a `curate train` run folder
        if not storage.is_file(ck):
            raise EvalError(f"checkpoint {uri} does not exist")
    parent = ck.rsplit("/", 1)[0]
    run = storage.input_cache_dir() / "checkpoints" / hashlib.sha256(ck.encode()).hexdigest()[:16]
    here = run / "run" / storage.basename(parent)
    here.mkdir(parents=True, exist_ok=True)
    link = here / storage.basename(ck)
    if link.is_symlink() or link.exists():
        link.unlink()
    cached = Path(storage.local_copy(ck))
    try:  # a hard link, not a symlink: evaluate resolves the path and looks beside it for train.json
        os.link(cached, link)
    except OSError:
        shutil.copy2(cached, link)
    for folder, local in ((parent, here), (parent.rsplit("/", 1)[0], here.parent)):
        info = storage.join(folder, "train.json")
        if storage.is_file(info):
            atomic_write_bytes(local / "train.json", storage.read_bytes(info), shard=False)
        elif (local / "train.json").exists():  # gone from the store since the last copy
            (local / "train.json").unlink()
    return link, ck


def results_uri(checkpoint_uri: str) -> str:
    """``<stem>.eval.json`` beside a checkpoint on a store."""
    folder, name = checkpoint_uri.rsplit("/", 1)
    return f"{folder}/{name.rsplit('.', 1)[0] if '.' in name else name}.eval.json"
