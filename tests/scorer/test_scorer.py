"""`curate scorer train` (a DFN on a trusted seed set) and `curate embed --model <scorer>`, for real:
open_clip_train's tiny preset on real flickr8k photos with their captions, then the real embed job."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.models.scorers import embeddings_id, resolve_scorer
from curate.tables import Dataset


def _run(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory, shared_data) -> Path:
    """24 flickr8k photos not in the pool, a caption file beside each; plus what a real folder
    also holds: an image without caption, one with an empty caption, a lone caption, a README,
    and a file named .jpg that is no image."""
    photos = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[18:45]
    captions = {}
    with open(shared_data / "flickr8k" / "captions.csv", newline="") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], row["caption"])
    d = tmp_path_factory.mktemp("seed") / "trusted"
    d.mkdir()
    for p in photos[:24]:
        shutil.copy(p, d / p.name)
        (d / f"{p.stem}.txt").write_text(captions[p.name] + "\n")
    shutil.copy(photos[24], d / photos[24].name)  # no caption
    shutil.copy(photos[25], d / photos[25].name)
    (d / f"{photos[25].stem}.txt").write_text("  \n")  # empty caption
    (d / "orphan.txt").write_text("a caption without its image")
    (d / "README.md").write_text("trusted pairs")
    (d / "broken.jpg").write_bytes(b"not a jpeg at all")
    (d / "broken.txt").write_text("a broken image")
    return d


@pytest.mark.slow
def test_scorer_train_then_embed_by_name(downloaded, seed_folder, capfd):
    ds: Dataset = downloaded
    argv = ["scorer", "train", str(ds.root), "--seed-set", str(seed_folder), "--name", "dfn",
            "--samples-seen", "64", "--batch-size", "16", "--progress-every", "0"]
    assert _run(argv) in (0, None)
    err = " ".join(capfd.readouterr().err.split())
    assert "train: step 4/4, samples 64/64, loss" in err and "ETA" in err  # the progress line, without -v
    assert "curate embed" in err and "--model dfn" in err

    folder = ds.root / "scorers" / "dfn"
    m = json.loads((folder / "scorer.json").read_text())
    assert m["name"] == "dfn" and m["arch"] == "curate-tiny" and m["samples_seen"] == 64 and m["steps"] == 4
    assert m["seed_set"]["kind"] == "images" and m["seed_set"]["samples"] == 24
    # every file of the seed folder is accounted for
    assert m["seed_set"]["counts"] == {"packed": 24, "no_caption": 1, "empty_caption": 1, "unreadable_image": 1,
                                       "caption_without_image": 1, "other_file": 1}
    assert sum(m["seed_set"]["counts"].values()) + 24 + 2 == len(list(seed_folder.iterdir()))  # + the .txt beside
    assert m["loss_first"] > 0 and m["loss_last"] > 0
    train_info = json.loads((folder / "run" / "train.json").read_text())
    assert train_info["data"]["samples"] == 24 and train_info["checkpoint"] == str(folder / "run" / "model.pt")
    assert (folder / "dfn.pt").samefile(folder / "run" / "model.pt") or \
        (folder / "dfn.pt").read_bytes() == (folder / "run" / "model.pt").read_bytes()

    ref = resolve_scorer("dfn", ds.root)
    assert ref is not None and ref.model_id == m["model_id"] and ref.model_id.startswith("curate-tiny__dfn-")
    assert resolve_scorer(str(folder), None).model_id == ref.model_id  # by folder, from anywhere
    assert resolve_scorer("curate-tiny", ds.root) is None and resolve_scorer("nope", ds.root) is None
    from curate.models import ModelError
    from curate.models.resolve import resolve_model

    with pytest.raises(ModelError, match="dfn is a scorer, with its own weights"):
        resolve_model("dfn", pretrained=str(folder / "dfn.pt"), dataset=ds)  # it said "unknown model 'dfn'"

    # the same call again: the finished scorer, no training, nothing left behind
    weights = (folder / "dfn.pt").read_bytes()
    assert _run(argv) in (0, None)
    capfd.readouterr()
    assert (folder / "dfn.pt").read_bytes() == weights and not list(folder.glob("*.tmp"))
    assert not (folder / "seed.next").exists()
    # another seed set under the same name: refused, the scorer and its record unchanged
    fewer = seed_folder.parent / "fewer"
    fewer.mkdir(exist_ok=True)
    for p in sorted(seed_folder.glob("*.jpg"))[:10]:
        shutil.copy(p, fewer / p.name)
        if p.with_suffix(".txt").exists():
            shutil.copy(p.with_suffix(".txt"), fewer / f"{p.stem}.txt")
    assert _run([*argv[:4], str(fewer), *argv[5:]]) == 2
    err = " ".join(capfd.readouterr().err.split())
    assert f"scorer 'dfn' was trained on another seed set ({seed_folder}, 24 pairs); this one is {fewer}" in err
    assert "--overwrite retrains it" in err
    assert json.loads((folder / "scorer.json").read_text()) == m and (folder / "dfn.pt").read_bytes() == weights

    assert _run(["embed", str(ds.root), "--model", "dfn", "--engine", "local", "--batch-size", "8"]) in (0, None)
    table = f"embeddings/{ref.model_id}"
    emb = ds.read(table)
    assert emb.num_rows == 18 and "clip_score" in emb.column_names
    scores = emb.column("clip_score")
    assert pc.all(pc.is_finite(scores)).as_py() and pc.min(scores).as_py() >= -1 and pc.max(scores).as_py() <= 1
    assert pc.count_distinct(scores).as_py() > 1  # a real model, real images: scores differ
    manifest = json.loads((ds.root / "_runs" / f"embed-{ref.model_id}.json").read_text())
    assert manifest["params"]["model_id"] == ref.model_id and manifest["params"]["scorer"]["name"] == "dfn"
    assert manifest["params"]["pretrained"] == str(ref.checkpoint) and manifest["params"]["model"] == "curate-tiny"
    assert manifest["counts"]["embedded"] == 18 and manifest["counts"]["scorer"] == "dfn"
    # select and recipes name the scorer's embeddings by the scorer's name
    assert embeddings_id("dfn", ds.root) == ref.model_id and embeddings_id(ref.model_id, ds.root) == ref.model_id


def test_scorer_train_bad_input_is_one_line(downloaded, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("x")
    assert _run(["scorer", "train", str(downloaded.root), "--seed-set", str(empty)]) == 2
    assert "neither .tar shards nor image files" in " ".join(capsys.readouterr().err.split())
    assert _run(["scorer", "train", str(downloaded.root), "--seed-set", "no-such-subset"]) == 2
    assert "neither a folder, a shard file or list, nor a subset" in " ".join(capsys.readouterr().err.split())
    nocap = tmp_path / "nocap"
    nocap.mkdir()
    shutil.copy(next((downloaded.root).rglob("*.jpg"), None) or _a_jpeg(tmp_path), nocap / "a.jpg")
    assert _run(["scorer", "train", str(downloaded.root), "--seed-set", str(nocap)]) == 2
    assert "no image has a non-empty .txt caption" in " ".join(capsys.readouterr().err.split())
    assert _run(["scorer", "train", str(downloaded.root), "--seed-set", str(empty), "--name", "ViT-B-32"]) == 2
    assert "is an open_clip model name" in " ".join(capsys.readouterr().err.split())
    assert _run(["scorer", "train", str(downloaded.root), "--seed-set", str(empty), "--name", "../x"]) == 2
    assert "scorer name '../x'" in " ".join(capsys.readouterr().err.split())


def _a_jpeg(tmp_path: Path) -> Path:
    from PIL import Image

    p = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(p)
    return p


@pytest.mark.slow
def test_scorer_from_a_subset_then_a_recipe_names_it(downloaded):
    """A subset of the dataset as the seed set (resharded), then a recipe whose embedding_model is
    the scorer's name: the recipe embeds the pool with it and filters on its scores."""
    from curate.recipe import load_recipe, run_recipe
    from curate.subset import write_subset
    from curate.train.scorer import train_scorer

    ds: Dataset = downloaded
    uids = sorted(ds.read("samples", columns=["uid"]).column("uid").to_pylist())[:12]
    write_subset(ds, "trusted", uids, {"stage": "test", "what": "12 hand-checked pairs"})
    m = train_scorer(ds, "dfn-sub", "trusted", samples_seen=32, batch_size=16, progress=False)
    assert m["seed_set"]["kind"] == "subset" and m["seed_set"]["samples"] == 12 and m["samples_seen"] == 32
    assert json.loads((ds.root / "scorers" / "dfn-sub" / "run" / "train.json").read_text())["data"]["samples"] == 12
    assert not ds.has_table(f"embeddings/{m['model_id']}")

    loaded = load_recipe(Path(__file__).parents[2] / "recipes" / "demo.yaml")
    loaded.recipe.dataset = str(ds.root)
    loaded.recipe.embedding_model = "dfn-sub"
    loaded.recipe.output = "curated"
    lineage = run_recipe(loaded, engine="local")
    assert ds.count(f"embeddings/{m['model_id']}") == 18  # embedded by the recipe, with the scorer
    assert lineage["embedding_model"] == m["model_id"]
    stage = lineage["stages"][-1]
    assert stage["kind"] == "clip_score" and stage["output_count"] < stage["input_count"]


def test_a_webdataset_seed_set_whose_shards_changed_is_another_seed_set(downloaded, tmp_path):
    """Shards under the same folder, replaced or added to, were taken for the seed set a scorer
    was trained on (no digest was recorded): the old weights came back under the new shards."""
    from curate.subset import write_subset
    from curate.train.scorer import ScorerError, train_scorer

    ds: Dataset = downloaded
    uids = sorted(ds.read("samples", columns=["uid"]).column("uid").to_pylist())[:12]
    write_subset(ds, "trusted-wds", uids)
    from curate.reshard import reshard

    reshard(ds, "trusted-wds", output=tmp_path / "wds", shard_size=6)
    m = train_scorer(ds, "dfn-wds", str(tmp_path / "wds"), samples_seen=32, batch_size=16, progress=False)
    seed = m["seed_set"]
    assert seed["kind"] == "webdataset" and seed["shards"] == 2 and seed["samples"] == 12 and seed["digest"]
    assert train_scorer(ds, "dfn-wds", str(tmp_path / "wds"), samples_seen=32, batch_size=16, progress=False) == m
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    shutil.copy(tars[0], tmp_path / "wds" / "extra.tar")  # one more shard under the same folder
    with pytest.raises(ScorerError, match="scorer 'dfn-wds' was trained on another seed set"):
        train_scorer(ds, "dfn-wds", str(tmp_path / "wds"), samples_seen=32, batch_size=16, progress=False)
    assert json.loads((ds.root / "scorers" / "dfn-wds" / "scorer.json").read_text()) == m


@pytest.mark.slow
def test_recipe_stage_trains_a_scorer_then_filters_on_it_by_name(downloaded, seed_folder, tmp_path):
    """`kind: scorer` trains a DFN from a trusted seed folder inside the recipe (the parameters of
    `curate scorer train`); the recipe's `embedding_model` names it, so the next stage embeds the
    pool with it and filters on its scores. A rerun hits the stage cache."""
    from curate.recipe import load_recipe, run_recipe
    from curate.train.scorer import ScorerTrainParams

    ds: Dataset = downloaded
    recipe = tmp_path / "dfn.yaml"
    recipe.write_text(f"""name: dfn-recipe
dataset: {ds.root}
embedding_model: dfn-stage
input: downloaded
output: dfn-half
stages:
  - kind: scorer
    name: dfn-stage
    seed_set: {seed_folder}
    samples_seen: 32
    batch_size: 16
  - kind: clip_score
    fraction: 0.5
""")
    lineage = run_recipe(load_recipe(recipe), engine="local")
    folder = ds.root / "scorers" / "dfn-stage"
    m = json.loads((folder / "scorer.json").read_text())
    assert m["samples_seen"] == 32 and m["seed_set"]["kind"] == "images" and m["seed_set"]["samples"] == 24
    scorer_stage, clip = lineage["stages"]
    assert scorer_stage["kind"] == "scorer" and scorer_stage["output_count"] == scorer_stage["input_count"] == 18
    assert scorer_stage["stats"]["model_id"] == m["model_id"] and scorer_stage["stats"]["samples_seen"] == 32
    assert lineage["embedding_model"] == m["model_id"]  # resolved once the stage had trained it
    assert ds.count(f"embeddings/{m['model_id']}") == 18
    assert clip["kind"] == "clip_score" and 9 <= clip["output_count"] < 18  # DataComp: score >= the 50% quantile
    # the subset is the top half by the scorer's own CLIP scores
    emb = ds.read(f"embeddings/{m['model_id']}", columns=["uid", "clip_score"]).to_pylist()
    kept = set(pq.read_table(ds.root / "subsets" / "dfn-half" / "uids.parquet").column("uid").to_pylist())
    lowest_kept = min(r["clip_score"] for r in emb if r["uid"] in kept)
    assert all(r["clip_score"] <= lowest_kept for r in emb if r["uid"] not in kept)

    again = run_recipe(load_recipe(recipe), engine="local", quiet=True)
    assert [s["cached"] for s in again["stages"]] == [True, True]

    # one parameter model: the CLI's names and checks are the stage's
    cli_only = {"ctx", "dataset", "nproc_per_node", "verbose", "progress_every", "master", "conf", "engine", "model",
                "storage_option"}
    import inspect

    from curate.commands.scorer import scorer_train

    cli = set(inspect.signature(scorer_train).parameters) - cli_only
    assert cli | {"arch"} == set(ScorerTrainParams.model_fields)
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("name: dfn-stage", "name: ViT-B-32"))
    from curate.errors import CurateError

    with pytest.raises(CurateError, match=r"bad\.yaml:\d+: .*is an open_clip model name"):
        run_recipe(load_recipe(bad), engine="local")
