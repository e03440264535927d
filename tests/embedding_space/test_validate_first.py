"""Argument, path and table errors are reported before any engine starts: every job command,
run with the Spark engine and a bad argument, exits 2 with a one-line message while
pyspark was never imported (so no JVM was started), in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from curate.tables import Dataset

from .helpers import clustered_embeddings, write_embeddings

# Runs each invocation in one fresh interpreter; records the exit code, stderr and whether
# pyspark had been imported when the error came.
_PROBE = r"""
import contextlib, io, json, sys
from curate.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    code = None
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
    out.append({"argv": argv, "code": code, "err": err.getvalue(), "pyspark": "pyspark" in sys.modules})
print(json.dumps(out))
"""


def test_bad_arguments_fail_before_spark(tmp_path):
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", clustered_embeddings(n=60, d=8, centers=2), rows_per_shard=60)
    root = str(ds.root)
    missing = str(tmp_path / "nope")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not a parquet file")
    cases = {
        "cluster k": ["cluster", root, "-k", "0"],
        "cluster model": ["cluster", root, "-k", "2", "--embeddings", "nope"],
        "cluster dataset": ["cluster", missing, "-k", "2"],
        "cluster rows": ["cluster", root, "-k", "100"],
        "cluster subset": ["cluster", root, "-k", "2", "--subset", "nope"],
        "semantic clustering": ["dedup", "semantic", root, "--eps", "0.1"],
        "semantic eps": ["dedup", "semantic", root, "--eps", "2"],
        "near threshold": ["dedup", "near", root, "--threshold", "2"],
        "near clusters": ["dedup", "near", root, "--clusters", "nope"],
        "exact downloads": ["dedup", "exact", root],
        "dbp fraction": ["prune", "dbp", root, "--keep-fraction", "1.5"],
        "ssp clustering": ["prune", "ssp", root, "--keep-fraction", "0.5", "-c", "nope"],
        "decontaminate eval": ["decontaminate", root, "--eval", missing],
        "decontaminate model": ["decontaminate", root, "--eval", missing, "--embeddings", "other"],
        "embed model": ["embed", root, "--model", "no-such-arch"],
        "embed tag": ["embed", root, "--model", "curate-tiny", "--pretrained", "no_such_tag"],
        "embed shards": ["embed", root, "--model", "curate-tiny"],
        "filter samples": ["filter", root, "-f", "clip_score:threshold=0.3"],
        "download samples": ["download", root],
        "match samples": ["metadata", "match", root, "--metadata", missing],
        "balance matches": ["metadata", "balance", root],
        "reshard subset": ["reshard", root, "--subset", "nope", "--output", str(tmp_path / "wds")],
        "ingest input": ["ingest", missing, "-o", str(tmp_path / "out")],
        # under auto, sizing the inputs reads the Parquet footers first: a broken one is its error
        "ingest auto footer": ["ingest", str(broken), "-o", str(tmp_path / "out"), "--engine", "auto"],
    }
    # --engine spark: the engine that starts a JVM (auto would pick in-process for this small pool)
    argvs = [a if "--engine" in a else [*a, "--engine", "spark"] for a in cases.values()]
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    for label, r in zip(cases, results):
        lines = [ln for ln in r["err"].splitlines() if ln.strip() and not ln.startswith("WARNING:")]
        assert r["code"] == 2, (label, r)
        assert len(lines) == 1 and lines[0].startswith("curate: error: "), (label, r["err"])
        assert not r["pyspark"], f"{label}: pyspark was imported before the error: {r['err']}"
    by = dict(zip(cases, results))
    assert "--k must be >= 1, got '0'" in by["cluster k"]["err"]
    assert "embeddings/nope not found" in by["cluster model"]["err"]
    assert "does not exist" in by["cluster dataset"]["err"]
    assert "at least k=100" in by["cluster rows"]["err"]
    assert "clustering 'kmeans' not found" in by["semantic clustering"]["err"]
    assert "--eps" in by["semantic eps"]["err"]
    assert "downloads" in by["exact downloads"]["err"]
    # a dataset with no images says so before the model is looked up (tests/embed checks the
    # model before the engine on a downloaded one)
    for label in ("embed model", "embed tag", "embed shards"):
        assert "no downloaded image shards" in by[label]["err"], label
    assert "no samples table; run `curate ingest`" in by["download samples"]["err"]
    assert "no samples table" in by["match samples"]["err"]
    assert "no metadata_matches table; run `curate metadata match`" in by["balance matches"]["err"]
    assert "subset not found" in by["reshard subset"]["err"]
    assert f"{missing}: no such file or folder" in by["ingest input"]["err"]
    assert "broken.parquet: not a readable Parquet file" in by["ingest auto footer"]["err"]
    assert not (tmp_path / "out").exists()  # nothing written for a failed start
    assert "samples" in by["filter samples"]["err"]
