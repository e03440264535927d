"""A job subprocess for the kill -9 test: exact dedup of DATASET (a path or URI) with decisions
cut into small shards, so the writes take long enough to be killed in the middle."""

import sys

import curate.selection as selection
from curate.embedding_space.jobs import run_exact_dedup

if __name__ == "__main__":
    selection.DECISIONS_SHARD_ROWS = int(sys.argv[2])  # many small shards: a long write phase
    run_exact_dedup(sys.argv[1])
    print("done", flush=True)
