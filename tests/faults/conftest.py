"""Fixtures of the fault tests (helpers in faultkit.py beside them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultkit import ROWS  # noqa: E402


@pytest.fixture(scope="session")
def fault_pool(tmp_path_factory) -> Path:
    """600 caption rows (a few duplicates and rejects), as JSONL."""
    d = tmp_path_factory.mktemp("fault-pool")
    rows = [{"url": f"http://example.com/{i}.jpg", "caption": f"a photo number {i}"} for i in range(ROWS)]
    rows += [{"url": "http://example.com/7.jpg", "caption": "a photo number 7"}, {"url": "", "caption": "x"}]
    (d / "pool.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d / "pool.jsonl"
