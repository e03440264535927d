from __future__ import annotations

import json

import numpy as np
import pytest

from curate.evaluate import EvalError, evaluate, retrieval, zero_shot, zero_shot_metrics
from tests.shared_sets import write_eval_sets


@pytest.fixture(scope="module")
def bundle():
    from curate.models import load_model

    return load_model("curate-tiny", seed=3)


@pytest.fixture(scope="module")
def small_sets(shared_data, tmp_path_factory):
    """5 CIFAR-10 classes x 4 photos and 12 Flickr8k photos with their 5 captions each."""
    return write_eval_sets(shared_data, tmp_path_factory.mktemp("evalsets"),
                           ["airplane", "cat", "dog", "ship", "truck"], per_class=4, photos=12)


def test_zero_shot_on_a_class_folder(bundle, small_sets):
    from curate.embed.core import embed_images, embed_texts, list_image_folder

    m = zero_shot(bundle, small_sets / "cifar", templates=["a photo of a {}."])
    assert m["n_images"] == 20 and m["n_classes"] == 5 and set(m["per_class_recall"]) == {
        "airplane", "cat", "dog", "ship", "truck"}
    # the same numbers from the embeddings computed by hand
    paths, labels = list_image_folder(small_sets / "cifar")
    names = sorted(set(labels))
    cls = embed_texts(bundle, [f"a photo of a {n}." for n in names])
    ref = zero_shot_metrics(embed_images(bundle, paths), np.array([names.index(x) for x in labels]), cls, names)
    assert m["top1"] == pytest.approx(ref["top1"]) and m["mean_per_class_recall"] == pytest.approx(
        ref["mean_per_class_recall"])
    assert zero_shot(bundle, small_sets / "cifar", max_per_class=2)["n_images"] == 10


def test_retrieval_on_captions_and_held_out_split(bundle, small_sets):
    m = retrieval(bundle, small_sets / "flickr")
    assert m["n_images"] == 12 and m["n_captions"] == 60
    for k in (1, 5, 10):
        assert 0 <= m[f"image_to_text_R@{k}"] <= 1 and 0 <= m[f"text_to_image_R@{k}"] <= 1
    assert m["text_to_image_R@10"] >= m["text_to_image_R@5"] >= m["text_to_image_R@1"]
    names = sorted(p.name for p in (small_sets / "flickr" / "images").iterdir())[:5]
    held = retrieval(bundle, small_sets / "flickr" / "captions.csv", images=names)
    assert held["n_images"] == 5 and held["n_captions"] == 25
    (small_sets / "bad.csv").write_text("file,text\na.jpg,x\n")
    with pytest.raises(EvalError, match="image,caption"):
        retrieval(bundle, small_sets / "bad.csv")


def test_evaluate_writes_results_beside_the_checkpoint(bundle, small_sets, tmp_path):
    from curate.models import save_checkpoint

    ck = save_checkpoint(bundle.model, tmp_path / "run" / "model.pt", arch="curate-tiny")
    res = evaluate(ck, zeroshot=[small_sets / "cifar"], retrieval_sets=[small_sets / "flickr"])
    path = tmp_path / "run" / "model.eval.json"
    assert res["results_path"] == str(path)
    saved = json.loads(path.read_text())
    assert saved["model"] == "curate-tiny"
    assert set(saved["summary"]) >= {"cifar/top1", "cifar/mean_per_class_recall", "flickr/mean_recall"}
    assert saved["zeroshot"]["cifar"]["n_images"] == 20 and saved["retrieval"]["flickr"]["n_images"] == 12
    # the saved weights are the bundle's: same scores
    direct = zero_shot(bundle, small_sets / "cifar")
    assert saved["zeroshot"]["cifar"]["top1"] == pytest.approx(direct["top1"])
    with pytest.raises(EvalError, match="does not exist"):
        evaluate(tmp_path / "nope.pt", "curate-tiny", zeroshot=[small_sets / "cifar"])
    with pytest.raises(EvalError, match="nothing to evaluate"):
        evaluate(ck)


def test_cli_eval_random_weights(small_sets, tmp_path, capsys):
    from curate.cli import main

    out = tmp_path / "random.eval.json"
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "curate-tiny", "-z", str(small_sets / "cifar"), "-o", str(out)])
    assert e.value.code == 0
    assert json.loads(out.read_text())["checkpoint"] is None
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path / "missing.pt"), "-z", str(small_sets / "cifar")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
