"""Real object-storage servers on 127.0.0.1, spoken to over HTTP: S3 (moto's standalone server)
and Google Cloud Storage (gcp-storage-emulator, the JSON API with resumable uploads)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # s3kit.py, gcskit.py, shard_writer.py beside it

from s3kit import S3_ENV, free_port as _free_port, loopback_server as _loopback_server, moto_server  # noqa: E402


@pytest.fixture(scope="session")
def s3_server_dir(tmp_path_factory):
    """Where the loopback S3 server writes its log (one access-log line per request)."""
    return tmp_path_factory.mktemp("moto")


@pytest.fixture(scope="session")
def s3_server(s3_server_dir):
    """``python -m moto.server`` bound to loopback; yields its endpoint URL; stopped by its pid."""
    with moto_server(s3_server_dir) as url:
        yield url


@pytest.fixture
def s3_requests(s3_server_dir, bucket):
    """``s3_requests(key)``: requests the server has logged for that object of ``bucket``."""
    from s3kit import requests_for

    return lambda key: requests_for(s3_server_dir, bucket, key)


def _store_env(monkeypatch, env: dict, unset: tuple[str, ...]) -> dict:
    """Set a store's environment for one test; curate's own storage options and ``unset`` are
    cleared so nothing from the developer's shell reaches a real endpoint."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("CURATE_STORAGE_OPTIONS", *unset):
        monkeypatch.delenv(k, raising=False)
    return env


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS environment a pyarrow/boto3/s3fs user sets, pointing at the loopback server."""
    return _store_env(monkeypatch, {"AWS_ENDPOINT_URL": s3_server, **S3_ENV}, unset=("AWS_ENDPOINT_URL_S3",))


@pytest.fixture
def bucket(s3_env):
    """A fresh bucket (created with boto3) for one test; its name."""
    import boto3

    name = f"curate-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """``gcp-storage-emulator start`` (in memory) bound to loopback; yields its URL; stopped by its pid."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator (the test extras) is not installed")
    port = _free_port()
    with _loopback_server([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                           "--port", str(port), "--in-memory", "--quiet"], f"http://127.0.0.1:{port}",
                          "/storage/v1/b", tmp_path_factory.mktemp("gcs"), "GCS emulator") as url:
        yield url


@pytest.fixture
def gcs_env(gcs_server, monkeypatch):
    """The environment a Google Cloud Storage user sets for an emulator: STORAGE_EMULATOR_HOST
    (every Google client honours it) and the project new buckets are made in."""
    return _store_env(monkeypatch, {"STORAGE_EMULATOR_HOST": gcs_server, "GOOGLE_CLOUD_PROJECT": "curate-test"},
                      unset=("GOOGLE_APPLICATION_CREDENTIALS",))


@pytest.fixture
def gs_bucket(gcs_env):
    """A fresh bucket (created through pyarrow's GCS filesystem) for one test; its name."""
    from curate import storage

    name = f"curate-{uuid.uuid4().hex[:12]}"
    loc = storage.resolve(f"gs://{name}")
    loc.fs.create_dir(loc.path)
    return name
