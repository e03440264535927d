"""Embedding-space curation: k-means clustering, SemDeDup, density-based pruning,
exact/near duplicate removal and evaluation-set decontamination (see docs/embedding_space.md)."""
