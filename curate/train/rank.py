"""One torchrun rank: open_clip_train's ``main`` with the arguments node 0 planned.

    python -m torch.distributed.run ... -m curate.train.rank --output RUN [--threads N] [--verbose] -- ARGS

Started by :mod:`curate.train.launch`, never by hand. Writes ``RUN/ranks/rank_<r>.json``
(its throughput) when open_clip_train finished; exits 1 when it did not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="curate.train.rank")
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("oc_args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    oc_args = a.oc_args[1:] if a.oc_args[:1] == ["--"] else a.oc_args

    from curate.train.launch import rank_record, write_rank_record
    from curate.train.runner import run_open_clip_train

    epochs: list[dict] = []
    rc = run_open_clip_train(oc_args, a.threads, a.verbose, epochs=epochs)
    if rc == -1:
        return 1
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = epochs[0]["device"] if epochs else "?"
    write_rank_record(a.output, rank_record(rank, local_rank, world, device, epochs))
    import torch.distributed as dist

    if dist.is_initialized():  # no rank exits before every record is written: node 0 reads them next
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
