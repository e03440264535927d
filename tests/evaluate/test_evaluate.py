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
    # a file that is no checkpoint, with no train.json beside it to name the model (an EOFError with no
    # file named, or a KeyError traceback)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("hello\n")
    with pytest.raises(EvalError, match=r"cannot load checkpoint .*empty.pt: the file is empty or cut short"):
        evaluate(tmp_path / "empty.pt", zeroshot=[small_sets / "cifar"])
    with pytest.raises(EvalError, match=r"cannot load checkpoint .*notes.pt: not a PyTorch checkpoint"):
        evaluate(tmp_path / "notes.pt", zeroshot=[small_sets / "cifar"])


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


def test_every_set_is_checked_before_the_model_loads(small_sets, tmp_path, capsys, caplog, monkeypatch):
    """A retrieval set given last without its captions, or a template file without {}, failed
    only after the model loaded and the zero-shot sets before it were embedded (minutes for a
    large model on a real set); and random weights asked for printed open_clip's
    'WARNING:root:No pretrained weights loaded' (the results' model id says so)."""
    import curate.models
    from curate.cli import main

    loads = []
    real = curate.models.load_model
    monkeypatch.setattr(curate.models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    (tmp_path / "rt").mkdir()
    (tmp_path / "t.txt").write_text("a photo\n")
    for bad, said in (([ "-r", str(tmp_path / "rt")], "no captions.csv"),
                      (["--templates", str(tmp_path / "t.txt")], "needs a {} placeholder"),
                      (["-o", str(tmp_path)], "is a folder; give the file's path")):  # it failed after the eval
        with pytest.raises(SystemExit) as e:
            main(["eval", "--model", "curate-tiny", "-z", str(small_sets / "cifar"), "-o", str(tmp_path / "o.json"),
                  *bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and err.count("\n") == 1, err
    assert loads == []  # no model was loaded for a run that could not finish

    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "curate-tiny", "-z", str(small_sets / "cifar"), "-o", str(tmp_path / "o.json")])
    out = capsys.readouterr()
    assert e.value.code == 0 and len(loads) == 1
    assert "curate-tiny__random-seed0: results in" in out.out
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]


def test_eval_sets_mean_what_their_folders_hold(bundle, tmp_path):
    """A linked class folder is a class (it was dropped: 2 classes, chance 0.5); an empty class
    folder is refused (it was dropped too); two sets of one name are refused (the second
    replaced the first); a held-out split naming an image the set lacks is refused (it was
    left out in silence)."""
    from PIL import Image

    from curate.embed.core import list_image_folder

    def classes(root, names):
        for i, name in enumerate(names):
            (root / name).mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (16, 16), (80 * i, 40 * j, 200 - 60 * i)).save(root / name / f"{j}.jpg")

    classes(tmp_path / "elsewhere", ["green"])
    zs = tmp_path / "a" / "colours"
    classes(zs, ["red", "blue"])
    (zs / "green").symlink_to(tmp_path / "elsewhere" / "green", target_is_directory=True)
    assert sorted(set(list_image_folder(zs)[1])) == ["blue", "green", "red"]
    assert zero_shot(bundle, zs, templates=["a {}."])["n_classes"] == 3
    (zs / "ship").mkdir()
    with pytest.raises(EvalError, match="class folder 'ship' holds no image"):
        zero_shot(bundle, zs, templates=["a {}."])
    (zs / "ship").rmdir()
    other = tmp_path / "b" / "colours"
    classes(other, ["red", "blue"])
    with pytest.raises(EvalError, match="two zero-shot sets are both named 'colours'"):
        evaluate(None, "curate-tiny", zeroshot=[zs, other], output=tmp_path / "r.json")
    flickr = tmp_path / "f"
    (flickr / "images").mkdir(parents=True)
    for j in range(3):
        Image.new("RGB", (16, 16), (70 * j, 0, 0)).save(flickr / "images" / f"{j}.jpg")
    (flickr / "captions.csv").write_text("image,caption\n0.jpg,a\n1.jpg,b\n2.jpg,c\n")
    assert retrieval(bundle, flickr, images=["0.jpg", "1.jpg"])["n_images"] == 2
    with pytest.raises(EvalError, match="1 image\\(s\\) of the --images split are not in it \\(the first: 'typo.jpg'\\)"):
        retrieval(bundle, flickr, images=["0.jpg", "1.jpg", "typo.jpg"])
