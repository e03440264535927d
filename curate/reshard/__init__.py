"""Subset -> WebDataset training shards (DataComp resharder semantics).

``reshard(dataset, subset, output)`` plans with the engine (subset uid counts joined with the
``downloads`` table, positions assigned per source shard by the workers: ``plan.py``), then
writes each output shard in its own task (Spark or local) with the webdataset library's
``TarWriter``. See docs/reshard.md.
"""

from curate.reshard.job import reshard
from curate.reshard.output import read_meta, shard_urls
from curate.reshard.plan import ReshardPlan, plan_reshard
from curate.reshard.shard_task import OUTPUT_SHARD_FORMAT, write_shard_task

__all__ = [
    "OUTPUT_SHARD_FORMAT",
    "ReshardPlan",
    "plan_reshard",
    "read_meta",
    "reshard",
    "shard_urls",
    "write_shard_task",
]
