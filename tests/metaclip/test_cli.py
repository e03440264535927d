"""`curate metadata build|match|balance` through the real CLI (local engine: no JVM)."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from curate.subset import read_subset
from curate.tables import Dataset


def run(argv) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code or 0


def test_build_match_balance(tmp_path, make_samples, capsys):
    texts = ["a dog on the grass", "a dog and a cat", "the dog runs", "Golden Gate Bridge at night",
             "the Golden Gate Bridge", "Golden Gate Bridge, fog", "xyzzy", ""] * 5
    ds = make_samples(tmp_path / "pool", texts, shards=2)
    meta = tmp_path / "metadata.json"
    assert run(["metadata", "build", str(meta), "--dataset", str(ds.root), "--engine", "local",
                "--no-wordnet", "--wordfreq-top", "2000", "--bigram-min-count", "5",
                "--bigram-min-pmi", "1"]) == 0
    entries = json.loads(meta.read_text())
    assert "Golden Gate" in entries and "dog" in entries
    assert run(["metadata", "match", str(ds.root), "--metadata", str(meta), "--engine", "local"]) == 0
    assert Dataset(ds.root).count("metadata_matches") == len(texts)
    assert run(["metadata", "balance", str(ds.root), "--t", "3", "--seed", "5", "--engine", "local",
                "--name", "mc"]) == 0
    out = capsys.readouterr()
    assert "balance (t=3)" in out.err
    decisions = Dataset(ds.root).read("decisions/mc")
    assert decisions.num_rows == len(texts)
    assert set(decisions.column("reason").to_pylist()) == {"kept", "balanced_out", "no_metadata_match"}
    assert len(read_subset(ds, "mc")) == sum(decisions.column("kept").to_pylist())


def test_user_errors_are_one_line(tmp_path, make_samples, capsys):
    ds = make_samples(tmp_path / "pool", ["a dog"], shards=1)
    bad = tmp_path / "bad.json"
    bad.write_text('["dog", 7]', encoding="utf-8")
    assert run(["metadata", "match", str(ds.root), "--metadata", str(bad), "--engine", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error:") and str(bad) in err and "entry 1" in err and "\n" not in err
    assert run(["metadata", "balance", str(tmp_path / "pool"), "--engine", "local"]) == 2
    assert "curate metadata match" in capsys.readouterr().err
