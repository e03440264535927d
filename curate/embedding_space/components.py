"""Connected components of a pairs frame, computed by the engine (no node list on the driver).

Min-label propagation: every node starts labelled with its own uid; each round

1. every node takes the smallest label among its own and its neighbours' (the edges frame
   joined with the labels on the source node, then the minimum per destination);
2. pointer jumping: every node takes its label's label (shortens chains of labels, so a
   path of length d settles in about log d rounds instead of d).

A round that changes no label ends it. Then every node carries the smallest uid of its
component: the labels ``duplicates.connected_components`` gives over uid-sorted nodes. Each
round is a few joins and one aggregate; a worker holds one partition of them, never every
node. The number of rounds is returned (and recorded by the jobs that use it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LABELS = pa.schema([("uid", pa.string()), ("label", pa.string())])
EDGES = pa.schema([("uid", pa.string()), ("dst", pa.string())])
_PARENT = pa.schema([("label", pa.string()), ("jump", pa.string())])
_BEFORE = pa.schema([("uid", pa.string()), ("before", pa.string())])
MAX_ROUNDS = 10_000  # a guard: each round at least halves the longest label chain or ends


def _self_labels(batch: pa.RecordBatch) -> pa.Table:
    return pa.table([batch.column("uid"), batch.column("uid")], schema=LABELS)


def _messages(batch: pa.RecordBatch) -> pa.Table:
    """(uid, dst, label of uid) -> dst is offered that label."""
    return pa.table([batch.column("dst"), batch.column("label")], schema=LABELS)


def _as_parent(batch: pa.RecordBatch) -> pa.Table:
    return pa.table([batch.column("uid"), batch.column("label")], schema=_PARENT)


def _jumped(batch: pa.RecordBatch) -> pa.Table:
    # a label's own label is never larger than it (labels only ever decrease from the uid)
    return pa.table([batch.column("uid"), pc.min_element_wise(batch.column("label"), batch.column("jump"))],
                    schema=LABELS)


def _as_before(batch: pa.RecordBatch) -> pa.Table:
    return pa.table([batch.column("uid"), batch.column("label")], schema=_BEFORE)


def _changed(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    return t.filter(pc.not_equal(t.column("label"), t.column("before")))


def component_labels(edges) -> tuple[object, int]:
    """(frame of (uid, label = smallest uid of its component) for every node of ``edges``,
    rounds). ``edges``: a frame of (uid, dst) holding each edge in both directions."""
    labels = edges.select(["uid"]).distinct().map_batches(_self_labels, LABELS).cache()
    rounds = 0
    while True:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"connected components did not settle in {MAX_ROUNDS} rounds")
        offered = edges.join(labels, "uid").map_batches(_messages, LABELS)
        lowest = offered.union(labels).aggregate(["uid"], {"label": ("label", "min")})
        new = lowest.join(lowest.map_batches(_as_parent, _PARENT), "label").map_batches(_jumped, LABELS).cache()
        compared = new.join(labels.map_batches(_as_before, _BEFORE), "uid")
        changed = compared.map_batches(_changed, compared.schema).count()
        labels.release()
        labels = new
        if changed == 0:
            return labels, rounds


def keepers(keep_by: str):
    """Per component (a group of (uid, label, best, score) rows): one row per node with
    kept, value (its highest similarity) and detail (the component's kept uid). The kept uid
    is the smallest, or with ``keep_by="clip_score"`` the highest score (missing scores last),
    ties by uid: the rule of ``duplicates.near_duplicate_decisions``."""
    from curate.embedding_space.near_partitions import GROUPS_SCHEMA

    def decide(group: pa.Table) -> pa.Table:
        g = group.sort_by("uid")
        n = g.num_rows
        k = 0
        if keep_by == "clip_score":
            s = g.column("score").cast(pa.float64()).to_numpy(zero_copy_only=False)
            k = int(np.lexsort((np.arange(n), -s))[0])  # NaN (no score) sorts last
        uids = g.column("uid").combine_chunks()
        return pa.Table.from_arrays([uids, pa.array(np.arange(n) == k), g.column("best").cast(pa.float64()),
                                     pa.array([uids[k].as_py()] * n, pa.string())], schema=GROUPS_SCHEMA)

    return decide
