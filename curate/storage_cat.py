"""``python -m curate.storage_cat URI``: stream one file or object to stdout.

Training reads WebDataset shards through webdataset's ``pipe:`` URLs (the way it reads
``aws s3 cp s3://... -``); this is the command those URLs run, so a shard on any store curate
reads (``curate.storage``: s3://, gs://, hdfs://, fsspec schemes) streams with the same
settings (AWS_* variables, CURATE_STORAGE_OPTIONS) and no cloud CLI installed."""

from __future__ import annotations

import shlex
import sys


def pipe_url(uri: str) -> str:
    """The webdataset ``pipe:`` URL that streams ``uri``."""
    return f"pipe:{shlex.quote(sys.executable)} -m curate.storage_cat {shlex.quote(uri)}"


def main(argv: list[str]) -> int:
    from curate import storage

    if len(argv) != 1:
        print("usage: python -m curate.storage_cat URI", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    try:
        with storage.open_input_stream(argv[0]) as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                out.write(block)
    except (OSError, storage.StorageError) as e:
        print(f"{argv[0]}: {e}", file=sys.stderr)
        return 1
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
