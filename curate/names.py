"""User-given names that become paths inside a dataset, and output paths next to its tables.

A run, subset, clustering or model id name becomes a folder (``subsets/NAME``,
``decisions/NAME``, ``embeddings/ID``...). ``check_name`` admits only a safe charset with no
path separators and no ``..``, so a name can never step out of its parent folder or over
another table; ``check_output_path`` keeps a user output path (reshard, report) off the
dataset's tables. Both raise ``InvalidNameError`` (one line, before any work starts);
``name_callback`` runs the check while the command line is parsed, before Spark starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from curate.errors import CurateError

MAX_NAME_CHARS = 128
# Letters, digits and . _ - + (the filter command's default run name joins filter names with
# '+'); the first character is a letter or digit, so no name is hidden ('_', '.') or an option.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

# Top-level folders of a dataset: a name equal to one of them (any case) is refused, so a
# name can never be mistaken for, or written over, a table of its own.
RESERVED = frozenset({
    "samples", "rejects", "duplicates", "downloads", "images", "embeddings", "embed_failures",
    "decisions", "subsets", "text_stats", "centroids", "clusters", "cluster_stats",
    "decontamination", "metadata_matches", "entry_counts", "entry_balance",
    "reshard_missing", "webdataset", "reports", "subset",
})
# Folders of a dataset that an output path may not enter (webdataset/ and reports/ are where
# reshard and report write by default; metaclip/ holds the metadata copy a balance reads).
PROTECTED_FOLDERS = (RESERVED | {"metaclip"}) - {"webdataset", "reports"}


class InvalidNameError(CurateError):
    """A name or output path given by the user would land outside its folder or on a table."""


def check_name(value: str, what: str = "name", reserved: bool = True) -> str:
    """``value`` if it is a safe single path component; else ``InvalidNameError`` naming ``what``."""
    why = None
    if not isinstance(value, str) or not value:
        why = "is empty"
    elif len(value) > MAX_NAME_CHARS:
        why = f"is longer than {MAX_NAME_CHARS} characters"
    elif "/" in value or "\\" in value or os.sep in value:
        why = "contains a path separator"
    elif ".." in value:
        why = "contains '..'"
    elif not NAME_RE.match(value):
        why = "may hold only letters, digits and . _ - + (starting with a letter or digit)"
    elif reserved and value.lower() in RESERVED:
        why = "is the name of a dataset table"
    if why:
        raise InvalidNameError(f"{what} {value!r} {why}; use a plain name such as 'my_subset'")
    return value


def check_output_path(path: str | os.PathLike, dataset_root: str | os.PathLike, what: str = "output") -> Path:
    """``path`` (resolved) if writing there cannot touch the dataset's tables.

    Allowed: anywhere outside the dataset, or inside it under a folder that is not a table
    folder (``DATASET/webdataset/...``, ``DATASET/reports/...``). Refused: the dataset folder
    itself, a folder holding it, and any path inside a table or hidden folder (``samples/``,
    ``subsets/``, ``_runs/``, ...). A URI (``s3://bucket/shards``) is compared as a URI and
    returned as a string.
    """
    from curate import storage

    if storage.is_uri(path) or storage.is_uri(dataset_root):
        out_s, root_s = storage.resolve(path).uri.rstrip("/"), storage.resolve(dataset_root).uri.rstrip("/")
        if out_s == root_s or root_s.startswith(out_s + "/"):
            raise InvalidNameError(f"{what} {str(path)!r} is the dataset {root_s} or holds it; "
                                   f"choose a folder of its own")
        if out_s.startswith(root_s + "/"):
            top = out_s[len(root_s) + 1:].split("/")[0]
            if top.startswith((".", "_")) or top.lower() in PROTECTED_FOLDERS:
                raise InvalidNameError(f"{what} {str(path)!r} is inside the dataset's {top!r} folder; "
                                       f"choose a path outside the dataset's tables")
        return out_s if storage.is_uri(path) else Path(path).expanduser().resolve()
    out = Path(path).expanduser().resolve()
    root = Path(dataset_root).expanduser().resolve()
    if out == root or root.is_relative_to(out):
        raise InvalidNameError(f"{what} {str(path)!r} is the dataset folder {root} or holds it; "
                               f"choose a folder of its own")
    if out.is_relative_to(root):
        top = out.relative_to(root).parts[0]
        if top.startswith((".", "_")) or top.lower() in PROTECTED_FOLDERS:
            raise InvalidNameError(f"{what} {str(path)!r} is inside the dataset's {top!r} folder; "
                                   f"choose a path outside the dataset's tables")
    return out


def name_callback(ctx, param, value):  # untyped: typer passes (ctx, param, value) by position
    """Typer/click callback: checks a name option (or each of a list) while parsing."""
    what = _option(param)
    if value is None:
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(check_name(v, what) for v in value)
    return check_name(value, what)


def model_id_callback(ctx, param, value):
    """Callback for an embeddings model id (a folder under ``embeddings/``; never reserved)."""
    if value is None:
        return value
    return check_name(value, _option(param), reserved=False)


def _option(param) -> str:
    opts = getattr(param, "opts", None) or []
    return max(opts, key=len) if opts else getattr(param, "name", None) or "name"


def check_file_output(path: str | os.PathLike, what: str, example: str) -> None:
    """A file ``path`` a command will write is not an existing folder (writing it failed only at
    the end, "Is a directory", after the work); ``example``: a file name to suggest inside it."""
    from curate import storage

    if storage.is_dir(str(path)):
        raise InvalidNameError(f"{what} {path} is a folder; give the file's path (e.g. "
                               f"{storage.join(str(path), example)})")


def check_folder_output(path: str | os.PathLike, what: str) -> None:
    """A folder ``path`` a command will write into is not an existing file (a traceback,
    FileExistsError or NotADirectoryError, once the work began)."""
    from curate import storage

    if storage.is_file(str(path)):
        raise InvalidNameError(f"{what} {path} is a file; give a folder to write into")
