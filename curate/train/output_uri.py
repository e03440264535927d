"""``curate train --output s3://...``: open_clip_train writes its checkpoints and logs to local
files, so a run whose output is a URI trains into a local working folder
(``$CURATE_WORK_DIR/train/<hash of the URI>``, kept so that a rerun resumes or returns the
finished run as a local one does) and, once it finished, uploads every file of it under the
URI, each as one whole object (``curate.outputs.upload_folder``). ``train.json`` and the
paths it names refer to the working folder; the returned info adds ``output_uri``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from curate import storage


def work_dir(uri: str) -> Path:
    base = Path(os.environ.get("CURATE_WORK_DIR") or Path.home() / ".cache" / "curate" / "work")
    return base / "train" / hashlib.sha256(storage.resolve(uri).uri.encode()).hexdigest()[:16]


def train(data, output, preset: str = "tiny", **kwargs) -> dict:
    """``curate.train.runner.train`` with ``output`` a path or a URI (see the module docstring)."""
    from curate.outputs import upload_folder
    from curate.train.runner import TrainError
    from curate.train.runner import train as train_local

    if not storage.is_uri(output):
        return train_local(data, output, preset, **kwargs)
    launch = kwargs.get("launch")
    if launch is not None and launch.nnodes > 1:
        raise TrainError(f"--output {output}: a URI output needs a single node (--nnodes 1); give a shared "
                         "folder for several nodes")
    uri = storage.resolve(str(output)).uri
    local = work_dir(uri)
    info = train_local(data, local, preset, **kwargs)
    upload_folder(local, uri, last=("train.json",))  # the run's record once its files are there
    return dict(info, output_uri=uri)
