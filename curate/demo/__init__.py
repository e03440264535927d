"""The end-to-end demo (``curate demo``): a procedural pool served on 127.0.0.1, curated by
the default recipe, and tiny CLIP baselines trained on raw, random and curated subsets."""
