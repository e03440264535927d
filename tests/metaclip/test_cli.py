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
    assert "balance (t=3)" in out.err and "; removed: " in out.err and "{" not in out.err  # a line, not a dict
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


@pytest.mark.parametrize("options, said", [
    (["--wordfreq-list", "huge"], "--wordfreq-list"), (["--wordfreq-top", "-1"], "--wordfreq-top"),
    (["--bigram-min-count", "0"], "--bigram-min-count"), (["--max-entries", "0"], "--max-entries"),
])
def test_build_options_no_list_can_take_are_refused_in_one_line(tmp_path, capsys, options, said):
    """A word list wordfreq does not have was a traceback (v1) or number-only lists (worldwide); a
    negative top-N took one word."""
    assert run(["metadata", "build", str(tmp_path / "m.json"), "--no-wordnet", "--no-bigrams", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error:") and said in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_tail_proportion_after_a_one_list_match_is_refused(tmp_path, make_samples, capsys):
    ds = make_samples(tmp_path / "pool", ["a dog on the grass", "the dog runs"] * 5, shards=1)
    meta = tmp_path / "metadata.json"
    meta.write_text('["dog", "grass"]', encoding="utf-8")
    assert run(["metadata", "match", str(ds.root), "--metadata", str(meta), "--engine", "local"]) == 0
    assert run(["metadata", "balance", str(ds.root), "--t", "3", "--tail-proportion", "0.01", "--engine", "local",
                "--name", "tp"]) == 2
    err = capsys.readouterr().err
    assert "--tail-proportion applies after a worldwide (MetaCLIP 2) match" in err
    assert not Dataset(ds.root).has_table("subsets/tp")
