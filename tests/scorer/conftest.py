"""A dataset with real downloaded image shards (the embed tests' fixture, loaded from there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_embed_conftest", Path(__file__).parents[1] / "embed" / "conftest.py")
_embed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_embed)

downloaded_template = _embed.downloaded_template
downloaded = _embed.downloaded
