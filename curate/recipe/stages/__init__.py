"""Stage adapters: one module per stage family, each registering its kinds with
``curate.recipe.registry.register``. Imported automatically by the registry."""
