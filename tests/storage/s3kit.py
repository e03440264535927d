"""Helpers for the object-storage tests (read back a bucket with boto3)."""

from __future__ import annotations

import os


def bucket_objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    """key (relative to ``prefix``) -> bytes of every object under ``prefix``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out
