"""A table replaced by a complete staged copy of it, so a job that fails before its checks pass
leaves the earlier table as it was (ingest's staged tables, a filter run's decisions)."""

from __future__ import annotations

import os

from curate import storage
from curate.tables.dataset import Dataset


def replace_table(dataset: Dataset, staged, table: str, also: tuple[str, ...] = ()) -> None:
    """Table ``table`` replaced by the staged table folder ``staged``; ``also``: files of the
    staged folder that are not shards (hidden names, e.g. a filter's centroids) carried too."""
    old = dataset.table_dir(table)
    if not dataset.remote:
        import shutil

        # renamed aside, not deleted shard by shard: a reader sees the whole old table or the
        # whole new one (or, between the two renames, none), never a mix of their shards
        aside = old.parent / f".{old.name}.replaced"
        shutil.rmtree(aside, ignore_errors=True)  # a run killed here before
        old.parent.mkdir(parents=True, exist_ok=True)
        if old.exists():
            os.replace(old, aside)
        os.replace(staged, old)
        shutil.rmtree(aside, ignore_errors=True)
        return
    storage.remove_tree(old)
    src, dest = storage.resolve(staged), storage.resolve(old)
    names = sorted(storage.basename(u) for u in storage.list_files(staged))
    marked = {i.base_name for i in storage.listing(src.join(storage.COMMIT_DIR))}
    extra = [n for n in also if storage.exists(storage.join(staged, n))]
    # every shard before any marker: a reader never sees a marked shard that is not there yet
    storage.for_each_object(lambda n: storage.copy_object(src.join(n), dest.join(n)), names + extra)
    storage.for_each_object(lambda n: storage.copy_object(src.join(storage.COMMIT_DIR, n),
                                                          dest.join(storage.COMMIT_DIR, n)),
                            [n for n in names if n in marked])
    storage.remove_tree(staged)


def remove_replaced_leftover(dataset: Dataset, table: str) -> None:
    """A local replacement killed between its two renames leaves the old table aside: removed."""
    if not dataset.remote:
        import shutil

        old = dataset.table_dir(table)
        shutil.rmtree(old.parent / f".{old.name}.replaced", ignore_errors=True)
