"""The embedding-space selection jobs, one module each: SemDeDup (``semdedup``), DBP/SSP
pruning (``prune``), exact and near duplicate removal (``exact_dedup``, ``near_dedup``),
decontamination (``decontaminate``). Each reads its input (optionally restricted to a uid set,
joined in the engine), writes ``decisions/<run>/`` (one row per input uid), the kept uids as
``subsets/<run>/``, per-cluster stats where clusters are involved, and ``_runs/<run>.json``
through ``curate.selection.finish_selection``. ``shared`` holds what they all use, ``clustered``
the clustered rows of SemDeDup and DBP. (``curate cluster`` itself is
``curate.embedding_space.clusters``.)"""

from curate.embedding_space.jobs.decontaminate import check_decontaminate, load_eval_embeddings, run_decontaminate
from curate.embedding_space.jobs.exact_dedup import check_exact_dedup, run_exact_dedup
from curate.embedding_space.jobs.near_dedup import check_near_dedup, run_near_dedup
from curate.embedding_space.jobs.prune import check_prune, run_prune
from curate.embedding_space.jobs.semdedup import check_semdedup, run_semdedup
from curate.embedding_space.jobs.shared import (DECISIONS, NO_EMBEDDING, NOT_DOWNLOADED, _concat_decisions, _finish,
                                                check_clustering, check_dataset)

__all__ = ["DECISIONS", "NO_EMBEDDING", "NOT_DOWNLOADED", "_concat_decisions", "_finish", "check_clustering",
           "check_dataset", "check_decontaminate", "check_exact_dedup", "check_near_dedup", "check_prune",
           "check_semdedup", "load_eval_embeddings", "run_decontaminate", "run_exact_dedup", "run_near_dedup",
           "run_prune", "run_semdedup"]
