"""Every recipe shipped in recipes/ validates (kinds, parameters, names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_validates(path):
    loaded = load_recipe(path)
    assert loaded.stages and all(s.line > 0 for s in loaded.stages)
    assert len({s.name for s in loaded.stages}) == len(loaded.stages)


def test_there_are_recipes():
    assert {p.name for p in RECIPES} >= {"demo.yaml", "full.yaml"}
