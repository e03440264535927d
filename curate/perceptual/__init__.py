"""Perceptual duplicates: hashes of the downloaded images (``hashes``), groups within a
Hamming radius by multi-index hashing (``groups``), and the dedup job (``job``)."""
