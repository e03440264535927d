"""One model-id resolver for every command: an embeddings table id, an open_clip NAME[:TAG],
or a checkpoint file all name the same embeddings (and, where images must be embedded, the
model behind them, found through the embed run's manifest); with two tables and no choice,
one line listing them. Real curate-tiny models and checkpoints, built locally."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.cli import main
from curate.filters.job import resolve_model as filter_table
from curate.filters.stages import parse_filter
from curate.manifest import RunManifest
from curate.models import ModelError, load_model, save_checkpoint
from curate.models.resolve import resolve_embeddings, resolve_model
from curate.tables import Dataset

from .helpers import write_embeddings


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dataset with two embeddings tables (random-init curate-tiny, and a checkpoint of it),
    the checkpoint file, and a folder of evaluation images."""
    import torch
    from PIL import Image

    tmp = tmp_path_factory.mktemp("ids")
    rng = np.random.default_rng(0)
    imgs = tmp / "eval_images"
    (imgs / "a").mkdir(parents=True)
    (imgs / "b").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(imgs / "ab"[i % 2] / f"{i}.png")
    ckpt = tmp / "scorer.pt"
    save_checkpoint(load_model("curate-tiny", None, seed=7).model, ckpt, arch="curate-tiny")
    ds = Dataset(tmp / "d")
    pool = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(40)]
    ids = {}
    for key, bundle in (("random", load_model("curate-tiny", None, seed=0)),
                        ("ckpt", load_model("curate-tiny", str(ckpt)))):
        with torch.no_grad():
            x = bundle.model.encode_image(torch.stack([bundle.preprocess(im) for im in pool])).float().numpy()
        write_embeddings(ds, bundle.model_id, x / np.linalg.norm(x, axis=1, keepdims=True), rows_per_shard=40)
        # what `curate embed` records about the model behind the table
        RunManifest("embed", {"model": "curate-tiny", "pretrained": bundle.pretrained, "seed": 0,
                              "model_id": bundle.model_id}).write(ds, f"embed-{bundle.model_id}")
        ids[key] = bundle.model_id
    return ds, ckpt, imgs, ids


def test_every_spelling_resolves_to_the_table(setup):
    ds, ckpt, _, ids = setup
    assert ids["ckpt"].startswith("curate-tiny__scorer-")
    for spec in (ids["ckpt"], f"embeddings/{ids['ckpt']}", str(ckpt), f"curate-tiny:{ckpt}"):
        assert resolve_embeddings(ds, spec) == ids["ckpt"], spec
    assert resolve_embeddings(ds, "curate-tiny", pretrained=str(ckpt)) == ids["ckpt"]
    assert resolve_embeddings(ds, ids["random"]) == ids["random"]
    # the filters read the same way
    assert filter_table(ds, str(ckpt), parse_filter("clip_score:threshold=0.2")) == f"embeddings/{ids['ckpt']}"
    # the model behind a table comes from the embed run's manifest
    ref = resolve_model(ids["ckpt"], dataset=ds)
    assert (ref.name, ref.pretrained, ref.model_id) == ("curate-tiny", str(ckpt), ids["ckpt"])
    ref = resolve_model(str(ckpt))  # a checkpoint alone: architecture from its 'arch' entry
    assert (ref.name, ref.model_id) == ("curate-tiny", ids["ckpt"])
    assert resolve_model("curate-tiny__random-seed3").seed == 3  # an id's own form, no dataset needed
    with pytest.raises(ModelError, match="neither a checkpoint file nor a pretrained tag"):
        resolve_model("curate-tiny:no_such_tag")


def test_two_tables_need_a_choice_in_one_line(setup, capsys):
    ds, _, _, ids = setup
    for args in (["cluster", str(ds.root), "-k", "2"], ["dedup", "near", str(ds.root)],
                 ["decontaminate", str(ds.root), "--eval", str(ds.root)]):
        code, _, err = _run([*args, "--engine", "local"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert ids["random"] in err and ids["ckpt"] in err and "--embeddings" in err
    code, _, err = _run(["cluster", str(ds.root), "-k", "2", "--embeddings", "curate-tiny", "--engine", "local"], capsys)
    assert code == 2 and "2 embeddings tables" in err and len(err.strip().splitlines()) == 1


def test_decontaminate_and_cluster_take_any_spelling(setup, capsys, tmp_path):
    ds, ckpt, imgs, ids = setup
    results = []
    for i, spec in enumerate([ids["ckpt"], str(ckpt), f"embeddings/{ids['ckpt']}"]):
        opt = "--embeddings" if i % 2 else "--model"
        code, out, err = _run(["decontaminate", str(ds.root), opt, spec, "--eval", str(imgs), "--threshold", "0.99",
                               "--name", f"dc{i}", "--engine", "local"], capsys)
        assert code == 0, err
        m = json.loads((ds.root / "_runs" / f"dc{i}.json").read_text())
        assert m["params"]["model_id"] == ids["ckpt"] and m["counts"]["eval_images"] == 6
        results.append(m["counts"]["reasons"])
    assert results[0] == results[1] == results[2]
    code, out, err = _run(["cluster", str(ds.root), "-k", "2", "-m", str(ckpt), "--name", "kc",
                           "--engine", "local"], capsys)
    assert code == 0, err
    assert json.loads((ds.root / "centroids" / "kc" / "_meta.json").read_text())["model_id"] == ids["ckpt"]


def test_eval_takes_a_checkpoint_or_an_embeddings_id_as_model(setup, capsys, tmp_path):
    _, ckpt, imgs, ids = setup
    outs = {}
    for label, spec in (("ckpt", str(ckpt)), ("id", ids["random"])):
        out_json = tmp_path / f"{label}.json"
        code, _, err = _run(["eval", "--model", spec, "-z", str(imgs), "-o", str(out_json), "--device", "cpu"],
                            capsys)
        assert code == 0, err
        outs[label] = json.loads(out_json.read_text())
    assert outs["ckpt"]["model_id"] == ids["ckpt"] and outs["id"]["model_id"] == ids["random"]

