"""MetaCLIP curation: build metadata, match captions against it, balance per entry.

- ``metadata``: metadata lists (WordNet, wordfreq, mined bigrams, user lists; or MetaCLIP's
  released ``metadata.json`` as is).
- ``matching``: MetaCLIP v1 substring matching (spacing rules + Aho-Corasick), exact.
- ``balance``: per-entry cap t with deterministic draws of (seed, uid, entry id).
- ``jobs``: the per-shard tasks and their drivers (Spark or local executors).
"""

from curate.metaclip.balance import entry_probabilities, uniform_draws
from curate.metaclip.matching import Matcher, load_metadata, naive_match, spacing

__all__ = ["Matcher", "entry_probabilities", "load_metadata", "naive_match", "spacing", "uniform_draws"]
