"""`curate embed --model` takes any model spelling: an embeddings table id embeds again with
the model behind it (same id, finished shards skipped), a checkpoint file is embedded with
the architecture recorded for it."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from curate.models import load_model, model_id_for, save_checkpoint


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_embed_takes_a_table_id_or_a_checkpoint(downloaded, capsys, tmp_path):
    root = str(downloaded.root)
    code, _, err = _run(["embed", root, "--model", "curate-tiny", "--seed", "2", "--limit-shards", "1",
                         "--engine", "local"], capsys)
    assert code == 0, err
    rid = "curate-tiny__random-seed2"
    code, _, err = _run(["embed", root, "--model", rid, "--limit-shards", "1", "--engine", "local"], capsys)
    assert code == 0, err
    run = json.loads((downloaded.root / "_runs" / f"embed-{rid}.json").read_text())
    assert run["params"]["seed"] == 2 and run["counts"]["shards_skipped"] == 1
    ckpt = tmp_path / "scorer.pt"
    save_checkpoint(load_model("curate-tiny", None, seed=5).model, ckpt, arch="curate-tiny")
    code, _, err = _run(["embed", root, "--model", str(ckpt), "--limit-shards", "1", "--engine", "local"], capsys)
    assert code == 0, err
    assert downloaded.has_table(f"embeddings/{model_id_for('curate-tiny', str(ckpt))}")
