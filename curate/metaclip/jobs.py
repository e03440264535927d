"""MetaCLIP jobs: per-shard tasks plus the drivers that plan, run and summarise them.

Tasks are JSON dicts run by any executor (Spark or local): each reads one input shard with
pyarrow, writes its own output shard atomically and returns counts that add up. One module
per job; this one re-exports their entry points:

- match (``match_job``; MetaCLIP 2 worldwide in ``match_worldwide_job``): ``samples`` ->
  ``metadata_matches`` + ``entry_counts``.
- balance (``balance_job``): ``metadata_matches`` -> ``decisions/<run>``, the subset,
  ``entry_balance/<run>`` and the distribution report.
- build (``build_job``): the metadata entry list; bigram counting over a pool by a shuffle.
- ``job_shards``: the table names and shard helpers the jobs share.
"""

from __future__ import annotations

from curate.metaclip.balance_job import balance_shard_task, run_balance
from curate.metaclip.build_job import ngram_count_task, run_build
from curate.metaclip.job_shards import (ENTRY_BALANCE, ENTRY_COUNTS, LANGUAGE_BALANCE, LANGUAGES, LANGUAGES_COPY,
                                        MATCHES, METADATA_COPY, NO_LANGUAGE, STAGE)
from curate.metaclip.match_job import match_shard_task, run_match
from curate.metaclip.match_worldwide_job import (NOSPACE_MODES, match_worldwide_batch, match_worldwide_shard_task,
                                                 run_match_worldwide)

__all__ = [
    "ENTRY_BALANCE", "ENTRY_COUNTS", "LANGUAGE_BALANCE", "LANGUAGES", "LANGUAGES_COPY", "MATCHES", "METADATA_COPY",
    "NO_LANGUAGE", "NOSPACE_MODES", "STAGE", "balance_shard_task", "match_shard_task",
    "match_worldwide_batch", "match_worldwide_shard_task", "ngram_count_task", "run_balance", "run_build",
    "run_match", "run_match_worldwide",
]
