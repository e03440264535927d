"""Concept coverage: how often each concept of an eval set, concept list or MetaCLIP metadata
appears in the pool and in curated subsets (captions, and images where embeddings exist),
which concepts a curation step starved, and per-class accuracy against frequency.
See docs/coverage.md."""

from curate.coverage.concepts import ConceptList, from_eval_folder, from_file, from_metadata
from curate.coverage.job import run_coverage

__all__ = ["ConceptList", "from_eval_folder", "from_file", "from_metadata", "run_coverage"]
