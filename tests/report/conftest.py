"""Fixtures for the report tests (the pool builder is in toypool.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toypool import make_downloaded_pool, run_two_stage_recipe  # noqa: E402


@pytest.fixture
def curated_pool(tmp_path):
    """The pool plus a two-stage recipe run into subsets/curated."""
    ds = make_downloaded_pool(tmp_path / "pool")
    return ds, run_two_stage_recipe(tmp_path, ds)
