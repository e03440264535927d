"""Recipes: an ordered list of selection stages over a pool, run with per-stage caching.

``load_recipe(path)`` validates a YAML recipe (errors name the line), ``run_recipe`` runs
it and writes the final subset with its lineage. Stage families plug in through
``curate.recipe.registry`` (one adapter module each in ``curate/recipe/stages/``).
"""

from curate.recipe.registry import Params, StageContext, StageResult, get_kind, kinds, register
from curate.recipe.inputs import initial_uids
from curate.recipe.runner import run_recipe
from curate.errors import RecipeError
from curate.recipe.spec import LoadedRecipe, load_recipe

__all__ = ["Params", "StageContext", "StageResult", "get_kind", "kinds", "register", "initial_uids",
           "run_recipe", "LoadedRecipe", "RecipeError", "load_recipe"]
