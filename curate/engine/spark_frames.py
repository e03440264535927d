"""Frame operations on Spark: ``SparkExecutor``'s side of the frame API.

The same methods as ``curate.engine.local_frames.ArrowFrameOps`` (frames are Spark
DataFrames here), each a thin call into ``curate.engine.spark``, which alone imports
pyspark. Exact dedup runs in key ranges, one partition a range, so no process holds more
than its range's keys.
"""

from __future__ import annotations


class SparkFrameOps:
    """Frame operations on ``self.spark`` (mixed into ``SparkExecutor``)."""

    @property
    def key_ranges(self) -> int:
        """Key ranges of an exact dedup: one per shuffle partition."""
        return int(self.spark.conf.get("spark.sql.shuffle.partitions"))

    def ui_url(self) -> str | None:
        from curate.engine.spark import ui_url

        return ui_url(self.spark)

    # ------------------------------------------------------------ frames
    def read_parquet(self, paths: list[str], schema):
        from curate.engine.spark import read_parquet

        return read_parquet(self.spark, paths, schema)

    def select_columns(self, frame, names: list[str]):
        from curate.engine.spark import select_columns

        return select_columns(frame, names)

    def with_packed_long(self, frame, name: str, high: str, low: str, bits: int):
        from curate.engine.spark import with_column_sql

        return with_column_sql(frame, name, f"shiftleft(cast({high} AS bigint), {int(bits)}) | {low}")

    def with_unpacked_long(self, frame, packed: str, high: str, low: str, bits: int):
        from curate.engine.spark import with_column_sql

        frame = with_column_sql(frame, high, f"cast(shiftright({packed}, {int(bits)}) AS int)")
        return with_column_sql(frame, low, f"{packed} & {(1 << int(bits)) - 1}")

    def with_lookup(self, frame, name: str, index_column: str, values: list[str]):
        from curate.engine.spark import with_lookup

        return with_lookup(frame, name, index_column, values)

    def join_frames(self, left, right, on, how: str = "left", broadcast_right: bool = False):
        from curate.engine.spark import join_frames

        return join_frames(left, right, on=on, how=how, broadcast_right=broadcast_right)

    def collect_frame(self, frame):
        from curate.engine.spark import collect_arrow

        return collect_arrow(frame)

    def unpersist(self, frame) -> None:
        from curate.engine.spark import unpersist

        unpersist(frame)

    # ------------------------------------------------------------ exact dedup in key ranges
    def first_by_key_ranges(self, frame, key: str, id_column: str, order_column: str, boundaries: list[str],
                            kept_dir: str) -> list[tuple[str, int]]:
        from curate.engine.spark import first_by_key_ranges

        return first_by_key_ranges(frame, key, id_column, order_column, boundaries, kept_dir)

    def duplicates_by_key_ranges(self, frame, key: str, id_column: str, order_column: str, boundaries: list[str],
                                 reason: str, out_dir: str) -> None:
        from curate.engine.spark import duplicates_by_key_ranges

        duplicates_by_key_ranges(frame, key, id_column, order_column, boundaries, reason, out_dir)

    # ------------------------------------------------------------ sorted, sharded writes
    def rank_rows(self, frame, sort_by: list[str]):
        from curate.engine.spark import rank_rows

        return rank_rows(frame, sort_by)

    def write_ranked_table(self, frame, dataset, table: str, schema, total: int, rows_per_shard: int,
                           skip_existing: bool = False, lookups: dict | None = None) -> dict:
        from curate.engine.spark import write_ranked_table

        return write_ranked_table(frame, dataset, table, schema, total, rows_per_shard, skip_existing, lookups)

    def write_sorted_table(self, frame, dataset, table: str, schema, sort_by: list[str], rows_per_shard: int,
                           skip_existing: bool = False, lookups: dict | None = None) -> dict:
        from curate.engine.spark import write_sorted_table

        if lookups:
            raise ValueError("write_sorted_table takes no lookups on Spark: add them with with_lookup")
        return write_sorted_table(frame, dataset, table, schema, sort_by, rows_per_shard, skip_existing)
