"""`curate dedup perceptual` reports bad arguments, a dataset without images and a missing
subset before any engine starts (pyspark never imported), as one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.embedding_space.test_validate_first import _PROBE


def test_bad_arguments_fail_before_spark(copies_ds, tmp_path):
    ds, _ = copies_ds
    root = str(ds.root)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "radius": (["dedup", "perceptual", root, "--radius", "70"], "--radius must be in [0, 64]"),
        "hash": (["dedup", "perceptual", root, "--hash", "ahash"], "--hash must be one of"),
        "bands": (["dedup", "perceptual", root, "--bands", "1"], "wider than 32 bits"),
        "no images": (["dedup", "perceptual", str(empty)], "no downloaded image shards and no phashes table"),
        "no dataset": (["dedup", "perceptual", str(tmp_path / "nope")], "does not exist"),
        "subset": (["dedup", "perceptual", root, "--subset", "nope"], "not found"),
        "embeddings": (["dedup", "perceptual", root, "--embeddings", "nope"], "embeddings tables: none"),
    }
    argvs = [[*a, "--engine", "spark"] for a, _ in cases.values()]
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for (label, (_, want)), r in zip(cases.items(), json.loads(res.stdout.strip().splitlines()[-1])):
        lines = [ln for ln in r["err"].splitlines() if ln.strip() and not ln.startswith("WARNING:")]
        assert r["code"] == 2 and len(lines) == 1 and want in lines[0], (label, r)
        assert not r["pyspark"], label
