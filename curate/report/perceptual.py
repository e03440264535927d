"""The report's perceptual-duplicate gallery: a few groups, the survivor beside the images
removed as its copies (``perceptual_duplicate`` decisions), with their Hamming distances."""

from __future__ import annotations

import pyarrow.compute as pc

from curate.tables import Dataset

REASON = "perceptual_duplicate"  # curate.perceptual.job.REASON (not imported: no imagehash needed here)


def perceptual_groups(dataset: Dataset, decisions: str | None, texts: dict[str, str] | None = None,
                      max_groups: int = 6, max_members: int = 5) -> list[dict]:
    """The largest groups (ties by survivor uid) of the decisions table's perceptual removals:
    ``[{"stage", "survivor": item, "removed": [item...], "size"}]``, item = uid, distance,
    caption, thumbnail. Empty when the table has no such removal."""
    from curate.report.images import thumbnails

    if not decisions or not dataset.has_table(decisions):
        return []
    dec = dataset.read(decisions, columns=["uid", "stage", "reason", "value", "detail"])
    removed = dec.filter(pc.equal(dec.column("reason"), REASON))
    if removed.num_rows == 0:
        return []
    by: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for r in removed.to_pylist():
        by.setdefault((r["stage"], r["detail"]), []).append((r["value"], r["uid"]))
    picked = sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0][1], kv[0][0]))[:max_groups]
    texts = texts or {}
    groups = []
    for (stage, survivor), members in picked:
        members = sorted(members)[:max_members]
        groups.append({"stage": stage, "size": len(by[(stage, survivor)]) + 1,
                       "survivor": {"uid": survivor, "distance": 0, "text": texts.get(survivor, "")},
                       "removed": [{"uid": u, "distance": int(v), "text": texts.get(u, "")} for v, u in members]})
    thumbs = thumbnails(dataset, [it["uid"] for g in groups for it in [g["survivor"], *g["removed"]]])
    for g in groups:
        for it in [g["survivor"], *g["removed"]]:
            it["thumb"] = thumbs.get(it["uid"])
    return groups
