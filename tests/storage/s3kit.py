"""Helpers for the object-storage tests: start a loopback server, read back a bucket with boto3.
Also imported by tests outside tests/storage (the standalone cluster's bucket test)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

# What an S3 user sets besides the endpoint: fixed test keys, a region, no instance metadata.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def moto_server(log_dir):
    """moto's standalone S3 server on 127.0.0.1 (its log in ``log_dir``); yields its endpoint URL."""
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with loopback_server(argv, f"http://127.0.0.1:{port}", "/moto-api/", log_dir, "moto server") as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_server(argv: list[str], url: str, probe: str, log_dir, name: str):
    """Start a test server process (its output to ``log_dir``), wait until ``url + probe``
    answers, yield; stop it by its pid."""
    log = open(log_dir / "server.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + probe, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{name} did not start on {url}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bucket_objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    """key (relative to ``prefix``) -> bytes of every object under ``prefix``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def requests_for(log_dir, bucket: str, key: str) -> int:
    """Requests the loopback server has logged for one object so far (HEADs and each ranged
    GET: one access-log line each). A request for a missing sentinel object is sent first and
    awaited in the log: every request made before it is logged by then."""
    import uuid

    import boto3

    log = os.path.join(log_dir, "server.log")
    sentinel = f"_sentinel-{uuid.uuid4().hex}"
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    with contextlib.suppress(Exception):
        s3.head_object(Bucket=bucket, Key=sentinel)
    deadline = time.time() + 30
    while True:
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if f"/{bucket}/{sentinel} " in text or time.time() > deadline:
            return text.count(f"/{bucket}/{key} ")
        time.sleep(0.05)
