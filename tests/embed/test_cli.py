"""`curate embed` and `curate models` through the CLI entry point."""

from __future__ import annotations

import json

import pytest

from curate.cli import main


def _run(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_embed_command_writes_tables_and_reruns_as_noop(downloaded, capsys):
    argv = ["embed", str(downloaded.root), "--model", "curate-tiny", "--engine", "local", "--batch-size", "8"]
    assert _run(argv) in (0, None)
    assert downloaded.count("embeddings/curate-tiny__random-seed0") == 18
    manifest = json.loads((downloaded.root / "_runs" / "embed-curate-tiny__random-seed0.json").read_text())
    assert manifest["counts"]["embedded"] == 18 and manifest["params"]["model"] == "curate-tiny"
    assert _run(argv) in (0, None)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert '"shards_skipped": 3' in err


def test_embed_command_errors_are_one_line(downloaded, tmp_path, capsys):
    assert _run(["embed", str(downloaded.root), "--model", "no-such-model", "--engine", "local"]) == 2
    assert "unknown model 'no-such-model'" in " ".join(capsys.readouterr().err.split())
    missing = tmp_path / "nope.pt"
    assert _run(["embed", str(downloaded.root), "--model", "curate-tiny", "--pretrained", str(missing), "--engine", "local"]) == 2
    assert f"checkpoint {missing} does not exist" in " ".join(capsys.readouterr().err.split())


def test_models_command_lists_curate_configs(capsys):
    assert _run(["models"]) in (0, None)
    out = capsys.readouterr().out
    assert "curate-tiny  (curate)" in out and "ViT-B-32" in out
    assert _run(["models", "ViT-B-32"]) in (0, None)
    info = json.loads(capsys.readouterr().out)
    assert "laion2b_s34b_b79k" in info["pretrained_tags"] and info["config"]["embed_dim"] == 512
    # an unknown name is the one line every command gives, with the near names (case aside)
    assert _run(["models", "vit-b-32"]) == 2
    assert "unknown model 'vit-b-32'; did you mean ViT-B-32" in " ".join(capsys.readouterr().err.split())
