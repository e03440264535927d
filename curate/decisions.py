"""Decisions: one row per (uid, stage) saying kept or removed, and why.

Every selection stage (filters, balancing, dedup, pruning, decontamination) writes its
decisions to ``DATASET/decisions/<run_name>/`` with the ``decisions`` schema, so the
funnel, the report and SQL all read one shape. Counts per reason go to the run manifest.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from curate.names import check_name
from curate.tables import Dataset, load_schema

KEPT = "kept"


def decisions_table(uids: Sequence[str] | pa.Array, stage: str, kept: Sequence[bool] | pa.Array,
                    reason: Sequence[str] | pa.Array, value: Sequence[float | None] | pa.Array | None = None,
                    detail: Sequence[str | None] | pa.Array | None = None) -> pa.Table:
    """Build a decisions table; ``reason`` must be 'kept' exactly where ``kept`` is true."""
    n = len(uids)
    schema = load_schema("decisions").arrow()
    cols = [
        pa.array(uids, pa.string()) if not isinstance(uids, (pa.Array, pa.ChunkedArray)) else uids.cast(pa.string()),
        pa.array([stage] * n, pa.string()),
        pa.array(kept, pa.bool_()) if not isinstance(kept, (pa.Array, pa.ChunkedArray)) else kept.cast(pa.bool_()),
        pa.array(reason, pa.string()) if not isinstance(reason, (pa.Array, pa.ChunkedArray)) else reason.cast(pa.string()),
        (pa.nulls(n, pa.float64()) if value is None else
         (value.cast(pa.float64()) if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.array(value, pa.float64()))),
        (pa.nulls(n, pa.string()) if detail is None else
         (detail.cast(pa.string()) if isinstance(detail, (pa.Array, pa.ChunkedArray)) else pa.array(detail, pa.string()))),
    ]
    cols = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
    return pa.Table.from_arrays(cols, schema=schema)


def reason_counts(decisions: pa.Table) -> dict[str, int]:
    """Rows per reason ('kept' included), sorted by reason."""
    vc = pc.value_counts(decisions.column("reason").combine_chunks())
    c = Counter({d["values"]: d["counts"] for d in vc.to_pylist()})
    return dict(sorted(c.items()))


def write_decisions(dataset: Dataset, run_name: str, decisions: pa.Table, rows_per_shard: int = 2_000_000) -> dict:
    """Sort by uid, write ``decisions/<run_name>/``, return counts per reason."""
    check_name(run_name, "decisions run name", reserved=False)
    decisions = decisions.sort_by([("uid", "ascending"), ("stage", "ascending")])
    dataset.write_table(f"decisions/{run_name}", decisions, schema="decisions", rows_per_shard=rows_per_shard)
    return reason_counts(decisions)


def kept_uids(decisions: pa.Table) -> pa.Array:
    return decisions.filter(decisions.column("kept")).column("uid").combine_chunks()
