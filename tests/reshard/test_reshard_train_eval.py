"""The chain a user runs: subset -> reshard -> train -> eval, linked from the subset's manifest."""

from __future__ import annotations

import json

import pytest

from curate.evaluate import evaluate
from curate.reshard import reshard
from curate.subset import read_subset_manifest, write_subset


def test_reshard_train_eval_links_into_subset_manifest(download_dataset, tmp_path, capsys, caplog):
    from curate.cli import main

    ds, uids = download_dataset
    write_subset(ds, "pick", uids[:20] + [uids[0]])
    reshard(ds, "pick", shard_size=8)
    with pytest.raises(SystemExit) as e:
        main(["train", str(ds.root / "webdataset" / "pick"), "-o", str(tmp_path / "run"), "--preset", "tiny",
              "--samples-seen", "64", "--batch-size", "16"])
    assert e.value.code == 0
    assert "saw 64 samples in 4 steps" in capsys.readouterr().out
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["data"]["subset"] == "pick" and info["data"]["samples"] == 20  # 21 rows, uid 3 failed
    # a labelled folder made from the same tiny images: 2 classes by colour channel
    zs = tmp_path / "zs"
    for i, cls in enumerate(["red thing", "blue thing"]):
        (zs / cls.replace(" ", "_")).mkdir(parents=True)
        from PIL import Image

        for j in range(3):
            Image.new("RGB", (16, 16), (200, 20, 20) if i == 0 else (20, 20, 200)).save(zs / cls.replace(" ", "_") / f"{j}.jpg")
    res = evaluate(tmp_path / "run", zeroshot=[zs])  # a run folder means its model.pt
    assert res["checkpoint"] == info["checkpoint"]
    assert res["model"] == "curate-tiny" and res["train"]["seed"] == 0
    man = read_subset_manifest(ds, "pick")
    assert man["trainings"][0]["checkpoint"] == info["checkpoint"]
    assert man["evaluations"][0]["results"] == res["results_path"]
    assert json.loads(open(res["results_path"]).read())["zeroshot"]["zs"]["n_images"] == 6
    # evaluating again replaces the link instead of piling up duplicates
    evaluate(info["checkpoint"], zeroshot=[zs])
    assert len(read_subset_manifest(ds, "pick")["evaluations"]) == 1
    # the same uids written again (a cached recipe, the demo rerun) keep their trainings and
    # evaluations (the rewrite lost them, and the report its Evaluation section)
    write_subset(ds, "pick", uids[:20] + [uids[0]])
    again = read_subset_manifest(ds, "pick")
    assert [e["checkpoint"] for e in again["trainings"]] == [info["checkpoint"]]
    assert [e["results"] for e in again["evaluations"]] == [res["results_path"]]
    # a later subset of the same name is another subset: the model's evaluation is not its
    write_subset(ds, "pick", uids[:5])
    with caplog.at_level("WARNING"):
        evaluate(info["checkpoint"], zeroshot=[zs])
    assert "evaluations" not in read_subset_manifest(ds, "pick")
    assert "trainings" not in read_subset_manifest(ds, "pick")  # other uids: not trained on them
    assert "not linking evaluations into subset pick: its uids changed since the shards were made" in caplog.text
    # the same command on shards resharded from the new subset is another run: not the old one handed back
    reshard(ds, "pick", shard_size=8, overwrite=True)
    with pytest.raises(SystemExit) as e:
        main(["train", str(ds.root / "webdataset" / "pick"), "-o", str(tmp_path / "run"), "--preset", "tiny",
              "--samples-seen", "64", "--batch-size", "16"])
    assert e.value.code == 2 and "holds another training run (other arguments, preset or shards)" in \
        capsys.readouterr().err


def test_shards_named_one_by_one_keep_their_sizes_and_whole_sets_their_lineage(download_dataset, tmp_path):
    """A single .tar or a brace pattern of a reshard output: the sample total comes from the
    folder's sizes.json (it was 0: no passes_over_data), and the subset lineage only when the
    pattern names every shard of it (some of them are part of the subset, not it)."""
    from curate.train.runner import resolve_train_data

    ds, uids = download_dataset
    write_subset(ds, "three", uids[:20])
    meta = reshard(ds, "three", shard_size=8)
    folder = ds.root / "webdataset" / "three"
    names = sorted(p.name for p in folder.glob("*.tar"))
    assert len(names) == 3
    sizes = json.loads((folder / "sizes.json").read_text())
    one = resolve_train_data(folder / names[0])
    assert one["samples"] == sizes[names[0]] and one["reshard"] is None
    stem = names[0][: -len("0.tar")]
    every = resolve_train_data(f"{folder}/{stem}{{0..2}}.tar")
    assert every["samples"] == meta["counts"]["written"] and every["reshard"]["subset"] == "three"
    two = resolve_train_data(f"{folder}/{stem}{{0..1}}.tar")
    assert two["samples"] == sizes[names[0]] + sizes[names[1]] and two["reshard"] is None
