"""A writer subprocess for the kill -9 test: writes TABLE of N shards into DATASET the way a
job's shard tasks do (skip a committed shard = resume), printing each shard index it commits."""

import sys

import pyarrow as pa

from curate import storage
from curate.tables import Dataset, write_parquet_atomic


def shard_rows(i: int, rows: int) -> pa.Table:
    base = i * rows
    return pa.table({"uid": [f"{base + j:032x}" for j in range(rows)],
                     "text": [f"caption {base + j} " + "x" * (j % 50) for j in range(rows)],
                     "value": pa.array([float(base + j) / 7 for j in range(rows)], pa.float32())})


def main(root: str, shards: int, rows: int) -> None:
    ds = Dataset(root)
    for i in range(shards):
        path = ds.shard_path("samples", i)
        if storage.committed(path):
            print(f"skip {i}", flush=True)
            continue
        write_parquet_atomic(shard_rows(i, rows), path)
        print(f"wrote {i}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
