"""DataComp's filtering baselines (basic, clip_score, laion2b, image_based, text_based).

Each filter scores every sample and decides kept / removed with a reason; the job
(``curate.filters.job``) runs them over the pool on Spark or in-process, writes one
``decisions`` row per (sample, filter), the ``text_stats`` table and the subset of samples
every filter kept (Parquet uid list + DataComp ``u8,u8`` .npy). See docs/filters.md.
"""
