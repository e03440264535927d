"""Deciding many small duplicate groups: ``group_apply_many`` against ``group_apply``.

Perceptual dedup (its hash-distance components) and near dedup (its similarity components)
decide each duplicate group on its own: keep one row, remove the others. At pool scale these
are millions of groups of two or three rows. ``group_apply`` calls its function once a group
(Spark's grouped ``applyInArrow``; in-process, a slice and a call a group), so the fixed cost
of a call is paid per group; ``group_apply_many`` hands the function tables of many whole
groups (hash-partitioned by the group key, sorted, streamed through ``mapInArrow``), and the
function decides them vectorised. Both run here on the same frame with near dedup's real
deciding function (``curate.embedding_space.components.keepers``, keep by CLIP score), and
the rows they give are checked equal.

Prints seconds and microseconds a group for each engine and call style, and the speed-up of
``group_apply_many`` over the baseline ``group_apply`` in the same process. ``--json PATH``
writes the numbers.

    python bench/grouped_apply.py [--groups 50000] [--engine local|spark|both]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow as pa


def groups_table(n_groups: int) -> pa.Table:
    """(uid, label, best, score) rows of ``n_groups`` components of 2 or 3 nodes."""
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(n_groups), rng.integers(2, 4, n_groups))
    n = len(label)
    return pa.table({"uid": [f"{x:032x}" for x in rng.permutation(n)], "label": [f"{x:032x}" for x in label],
                     "best": rng.random(n).astype(np.float32), "score": rng.random(n).astype(np.float32)})


def main() -> None:
    from curate.embedding_space.components import keepers
    from curate.embedding_space.near_partitions import GROUPS_SCHEMA
    from curate.engine import LocalExecutor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=50_000)
    ap.add_argument("--engine", choices=["local", "spark", "both"], default="both")
    ap.add_argument("--json")
    args = ap.parse_args()

    t = groups_table(args.groups)
    results = []
    for engine in (["local", "spark"] if args.engine == "both" else [args.engine]):
        if engine == "spark":
            from curate.engine.factory import open_executor

            ex = open_executor("spark", None, [], "bench-grouped-apply")
        else:
            ex = LocalExecutor()
        frame = ex.frame_from_table(t).cache()
        frame.count()  # the frame is built before either is timed
        outs, secs = {}, {}
        for how in ("group_apply", "group_apply_many"):
            start = time.perf_counter()
            outs[how] = getattr(frame, how)("label", keepers("clip_score"), GROUPS_SCHEMA).collect_small(
                t.num_rows + 1, sort_by=["uid"])
            secs[how] = time.perf_counter() - start
            print(f"{engine:6s} {how:17s} {args.groups:,} groups ({t.num_rows:,} rows): {secs[how]:7.2f} s "
                  f"{secs[how] / args.groups * 1e6:7.1f} us/group", flush=True)
        if not outs["group_apply"].equals(outs["group_apply_many"]):
            raise SystemExit(f"{engine}: group_apply_many gave other rows than group_apply")
        ratio = secs["group_apply"] / secs["group_apply_many"]
        print(f"{engine:6s} group_apply_many is {ratio:.1f}x faster than group_apply (same rows)")
        results.append({"engine": engine, "groups": args.groups, "rows": t.num_rows, "seconds": secs,
                        "speedup": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
