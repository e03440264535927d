"""Storage settings: ``--storage-option`` values and the AWS and Google Cloud environment, and
how they reach Spark workers and subprocesses.

S3 reads ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``;
GCS reads ``STORAGE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT`` (and pyarrow's credential
chain ``GOOGLE_APPLICATION_CREDENTIALS``); ``--storage-option KEY=VALUE`` (``configure``)
overrides them. Options reach Spark workers and
subprocesses through the ``CURATE_STORAGE_OPTIONS`` environment variable (JSON), which
``configure`` sets.
"""

from __future__ import annotations

import json
import os

from curate.errors import CurateError

OPTIONS_ENV = "CURATE_STORAGE_OPTIONS"


class StorageError(CurateError):
    """A storage URI that cannot be used (unknown scheme, missing support, bad option)."""


def parse_options(items: list[str]) -> dict[str, str]:
    """``--storage-option KEY=VALUE`` items -> dict (one-line error on a malformed one)."""
    from curate.keyvalue import parse_key_values

    try:
        return parse_key_values(items, "--storage-option")
    except ValueError as e:
        raise StorageError(str(e)) from None


def configure(options: dict[str, str]) -> None:
    """Make ``options`` the defaults of every later ``resolve`` in this process and its children."""
    if options:
        os.environ[OPTIONS_ENV] = json.dumps(options, sort_keys=True)
    else:
        os.environ.pop(OPTIONS_ENV, None)


def default_options() -> dict[str, str]:
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return {}
    try:
        return dict(json.loads(raw))
    except (ValueError, TypeError) as e:
        raise StorageError(f"{OPTIONS_ENV} is not a JSON object: {e}") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def truthy(v, name: str = "option") -> bool:
    """A yes/no setting's value; a word that is neither is a ValueError (``anonymous=maybe`` was
    read as false in silence)."""
    word = str(v).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{name}={v!r}: expected true or false (1/0, yes/no, on/off)")


AWS_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
           "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


# GOOGLE_APPLICATION_CREDENTIALS is left out on purpose: it names a file on the driver, which an
# executor may not have (its own credentials, e.g. a service account, are used there)
GCS_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")
GCS_CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"


# ---- settings on Spark workers -----------------------------------------------------------
_WORKER_ENV = (OPTIONS_ENV, *AWS_ENV, "AWS_EC2_METADATA_DISABLED", *GCS_ENV)


def worker_env() -> dict[str, str]:
    """The storage settings of this (driver) process, for a Spark task closure: executors do
    not inherit the driver's environment (and Spark local mode's Python workers only the
    environment of the session's start), so the engine ships these with every task."""
    return {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}


def apply_worker_env(env: dict[str, str]) -> None:
    """On a worker: take the driver's storage settings (``worker_env``) before touching a URI.
    Settings the driver did not have are removed, so a reused worker keeps no stale ones."""
    for k in _WORKER_ENV:
        if k in env:
            if os.environ.get(k) != env[k]:
                os.environ[k] = env[k]
        elif k in (OPTIONS_ENV,):
            os.environ.pop(k, None)
