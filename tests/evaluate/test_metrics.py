from __future__ import annotations

import numpy as np
import pytest

from curate.evaluate import class_embeddings, load_templates, retrieval_metrics, zero_shot_metrics


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_zero_shot_top1_and_mean_per_class_recall():
    classes = _unit(np.eye(3))
    # class 0: 4 images, 3 right; class 1: 1 image, wrong; class 2: 1 image, right
    images = _unit([[1, .1, 0], [1, 0, .2], [.9, .2, 0], [0, 0, 1], [1, .3, 0], [0, .1, 1]])
    labels = np.array([0, 0, 0, 0, 1, 2])
    m = zero_shot_metrics(images, labels, classes, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["per_class_recall"] == {"a": 0.75, "b": 0.0, "c": 1.0}
    assert m["mean_per_class_recall"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert m["chance"] == pytest.approx(1 / 3) and "top5" not in m


def test_class_embeddings_average_templates_per_class():
    t = _unit([[1, 0], [1, 1], [0, 1], [-1, 1]])  # class 0: rows 0-1, class 1: rows 2-3
    w = class_embeddings(t, 2, 2)
    assert np.allclose(np.linalg.norm(w, axis=1), 1)
    assert np.allclose(w[0], _unit(t[0] + t[1])) and np.allclose(w[1], _unit(t[2] + t[3]))


def test_retrieval_recall_at_k_matches_brute_force():
    rng = np.random.default_rng(0)
    img = _unit(rng.normal(size=(40, 16)))
    owner = np.repeat(np.arange(40), 3)
    txt = _unit(img[owner] + 0.5 * rng.normal(size=(120, 16)))
    m = retrieval_metrics(img, txt, owner, chunk=17)
    s = img @ txt.T
    i_rank = np.array([min((s[i] > s[i, t]).sum() for t in np.where(owner == i)[0]) for i in range(40)])
    t_rank = np.array([(s[:, t] > s[owner[t], t]).sum() for t in range(120)])
    for k in (1, 5, 10):
        assert m[f"image_to_text_R@{k}"] == pytest.approx((i_rank < k).mean())
        assert m[f"text_to_image_R@{k}"] == pytest.approx((t_rank < k).mean())
    assert 0 < m["text_to_image_R@1"] < m["text_to_image_R@10"] <= 1


def test_perfect_and_reversed_retrieval():
    img = _unit(np.eye(4))
    assert retrieval_metrics(img, img, np.arange(4))["text_to_image_R@1"] == 1.0
    m = retrieval_metrics(img, -img, np.arange(4), ks=(1, 3))
    assert m["text_to_image_R@1"] == 0.0 and m["image_to_text_R@3"] == 0.0


def test_templates(tmp_path):
    assert all("{}" in t for t in load_templates(None))
    assert len(load_templates("openai")) == 80
    f = tmp_path / "t.txt"
    f.write_text("# mine\na drawing of a {c}\n")
    assert load_templates(f) == ["a drawing of a {}"]
    f.write_text("no placeholder\n")
    with pytest.raises(Exception, match="placeholder"):
        load_templates(f)


def test_an_intermediate_checkpoint_records_what_it_saw_not_the_run_s_budget():
    """checkpoints/epoch_2.pt of a 4-checkpoint run of 2,048 samples saw 1,024 (its eval said
    2,048, and was linked into the subset's manifest beside the final model's)."""
    from pathlib import Path

    from curate.evaluate.tasks import _train_block

    info = {"preset": "tiny", "seed": 0, "samples_seen": 2048, "epochs": 4, "data": {"subset": "all"}}
    mid = _train_block(info, Path("/runs/r/checkpoints/epoch_2.pt"))
    assert mid["samples_seen"] == 1024 and mid["checkpoint_epoch"] == 2 and mid["run_samples_seen"] == 2048
    for final in ("/runs/r/model.pt", "/runs/r/checkpoints/epoch_4.pt"):
        assert _train_block(info, Path(final)) == {k: info[k] for k in ("preset", "seed", "samples_seen", "data")}
    assert _train_block(None, Path("/x/model.pt")) is None
