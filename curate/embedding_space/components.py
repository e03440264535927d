"""Connected components of a pairs frame, computed by the engine (no node list on the driver).

Min-label propagation with hooking: every node starts labelled with its own uid; each round

1. every node finds the smallest label among its own and its neighbours' (the edges frame
   joined with the labels on the source node, then the minimum per destination);
2. hooking: the node its old label names is offered that smallest label too, so whole label
   trees merge at once;
3. pointer jumping: every node takes its label's label.

Labels only decrease and stay inside a component; a path of length d settles in about
log d rounds, not d (steps 2 and 3).

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
MAX_ROUNDS = 10_000  # a guard: labels only decrease, so rounds are finite; this says it loudly


def component_labels(edges) -> tuple[object, int]:
    """(frame of (uid, label = smallest uid of its component) for every node of ``edges``,
    rounds). ``edges``: a frame of (uid, dst) holding each edge in both directions.

    Every step is a join, union, distinct or minimum by key (no pass in Python per row, so on
    Spark the rounds stay in the JVM)."""
    # each round's labels are checkpointed: the next round's plan starts from them, not from
    # every round before (and no cache is released under a frame still built on it)
    labels = edges.select(["uid"]).distinct().select_as([("uid", "uid"), ("label", "uid")]).checkpoint()
    nodes = labels.count()
    rounds = 0
    while True:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"connected components did not settle in {MAX_ROUNDS} rounds")
        # 1. the smallest label among a node's own and its neighbours'
        offered = edges.join(labels, "uid").select_as([("uid", "dst"), ("label", "label")])
        lowest = offered.union(labels).aggregate(["uid"], {"lowest": ("label", "min")})
        # 2. hooking: the node a node's old label names is offered that smallest label too, so
        #    whole label trees merge in one round
        moved = lowest.join(labels, "uid")  # (uid, lowest, label)
        hooked = (moved.select_as([("uid", "uid"), ("label", "lowest")])
                  .union(moved.select_as([("uid", "label"), ("label", "lowest")]))
                  .aggregate(["uid"], {"label": ("label", "min")}))
        # 3. pointer jumping: a node takes its label's label (never larger: a node's label is
        #    never above its own uid)
        parent = hooked.select_as([("label", "uid"), ("jump", "label")])
        new = hooked.join(parent, "label").select_as([("uid", "uid"), ("label", "jump")]).checkpoint()
        # labels only decrease: the round changed nothing iff old and new rows are the same set
        settled = new.union(labels).distinct().count() == nodes
        labels = new
        if settled:
            return labels, rounds


def keepers(keep_by: str):
    """Per component (rows (uid, label, best, score) of one or several components, ``label``
    naming each): one row per node with kept, value (its highest similarity) and detail (the
    component's kept uid). The kept uid is the smallest, or with ``keep_by="clip_score"`` the
    highest score (missing scores last), ties by uid: the rule of
    ``duplicates.near_duplicate_decisions``. Vectorised over components, so a call decides
    thousands of small groups (``group_apply_many``)."""
    from curate.embedding_space.near_partitions import GROUPS_SCHEMA
    from curate.engine.frame import first_of_runs

    def decide(rows: pa.Table) -> pa.Table:
        order = [("label", "ascending")]
        if keep_by == "clip_score":
            s = rows.column("score").cast(pa.float64())
            s = pc.if_else(pc.is_nan(s), pa.scalar(None, pa.float64()), s)  # NaN ranks as no score
            rows = rows.append_column("_neg_score", pc.negate(s))
            order.append(("_neg_score", "ascending"))  # missing scores (null) sort last
        g = rows.sort_by([*order, ("uid", "ascending")])  # each component's keeper first
        keeper = first_of_runs(g.column("label"))
        uids = g.column("uid").combine_chunks()
        kept = pa.array(np.arange(g.num_rows) == keeper)
        return pa.Table.from_arrays([uids, kept, g.column("best").cast(pa.float64()), uids.take(pa.array(keeper))],
                                    schema=GROUPS_SCHEMA)

    return decide
