"""The report's perceptual-duplicate gallery: a few groups, the survivor beside the images
removed as its copies (``perceptual_duplicate`` decisions), with their Hamming distances."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curate.report.frames import table_frame, top_k
from curate.tables import Dataset

REASON = "perceptual_duplicate"  # curate.perceptual.job.REASON (not imported: no imagehash needed here)
KEY = "group"
REMOVED = pa.schema([("uid", pa.string()), ("stage", pa.string()), ("value", pa.float64()),
                     ("detail", pa.string()), (KEY, pa.string())])


def _removed(batch: pa.RecordBatch) -> pa.Table:
    """The batch's perceptual removals, keyed by (stage, survivor)."""
    t = pa.Table.from_batches([batch])
    t = t.filter(pc.fill_null(pc.equal(t.column("reason"), REASON), False))
    key = pc.binary_join_element_wise(t.column("stage"), t.column("detail"), "\x1f")
    return pa.table([t.column("uid"), t.column("stage"), t.column("value").cast(pa.float64()), t.column("detail"), key],
                    schema=REMOVED)


def perceptual_groups(executor, dataset: Dataset, decisions: str | None, max_groups: int = 6,
                      max_members: int = 5) -> list[dict]:
    """The largest groups (ties by survivor uid, then stage) of the decisions table's perceptual
    removals: ``[{"stage", "survivor": item, "removed": [item...], "size"}]``, item = uid,
    distance; each group's closest ``max_members`` copies (ties by uid). Empty when the table
    has no such removal. Group sizes are counted and the groups and members chosen by the
    engine (``frames.top_k``): a group of millions of copies reaches the driver as a count.
    Captions and thumbnails are added by the caller."""
    if not decisions or not dataset.has_table(decisions):
        return []
    removed = (table_frame(executor, dataset, decisions, ["uid", "stage", "reason", "value", "detail"])
               .map_batches(_removed, REMOVED))
    sizes = removed.aggregate([KEY, "stage", "detail"], {"n": ("uid", "count")})
    top = top_k(sizes, [("n", "descending"), ("detail", "ascending"), ("stage", "ascending")], max_groups)
    if top.num_rows == 0:
        return []
    members = top_k(removed.keep_values(KEY, top.column(KEY)), [("value", "ascending"), ("uid", "ascending")],
                    max_members, by=KEY, groups=top.num_rows)
    groups = []
    for key, stage, survivor, n in zip(top.column(KEY).to_pylist(), top.column("stage").to_pylist(),
                                       top.column("detail").to_pylist(), top.column("n").to_pylist()):
        mine = members.filter(pc.equal(members.column(KEY), key))
        groups.append({"stage": stage, "size": int(n) + 1, "survivor": {"uid": survivor, "distance": 0},
                       "removed": [{"uid": u, "distance": int(v)} for u, v in
                                   zip(mine.column("uid").to_pylist(), mine.column("value").to_pylist())]})
    return groups
