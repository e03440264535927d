"""Evaluation metrics over L2-normalised embeddings (plain numpy, no model)."""

from __future__ import annotations

import numpy as np


def class_embeddings(text_emb: np.ndarray, n_classes: int, n_templates: int) -> np.ndarray:
    """Per-class zero-shot weights: the mean of each class's template embeddings, re-normalised.

    ``text_emb`` rows are ordered class-major (class 0 templates, class 1 templates, ...)."""
    w = text_emb.reshape(n_classes, n_templates, -1).mean(axis=1)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def zero_shot_metrics(image_emb: np.ndarray, labels: np.ndarray, class_emb: np.ndarray,
                      classnames: list[str] | None = None) -> dict:
    """Top-1 accuracy, top-5 (when there are more than 5 classes) and mean per-class recall."""
    labels = np.asarray(labels)
    scores = image_emb @ class_emb.T
    pred = scores.argmax(axis=1)
    correct = pred == labels
    n_classes = class_emb.shape[0]
    recalls = []
    per_class = {}
    for c in range(n_classes):
        m = labels == c
        if m.any():
            r = float(correct[m].mean())
            recalls.append(r)
            per_class[classnames[c] if classnames else str(c)] = round(r, 6)
    out = {
        "top1": float(correct.mean()) if len(labels) else 0.0,
        "mean_per_class_recall": float(np.mean(recalls)) if recalls else 0.0,
        "n_images": int(len(labels)),
        "n_classes": int(n_classes),
        "chance": 1.0 / n_classes if n_classes else 0.0,
        "per_class_recall": per_class,
    }
    if n_classes > 5:
        top5 = np.argsort(-scores, axis=1)[:, :5]
        out["top5"] = float((top5 == labels[:, None]).any(axis=1).mean())
    return out


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                      ks: tuple[int, ...] = (1, 5, 10), chunk: int = 2048) -> dict:
    """Image->text and text->image recall@k.

    ``text_image[t]`` is the index of caption t's image. Image->text: an image counts as found
    when any of its captions ranks in the top k (the convention of CLIP and DataComp).
    """
    text_image = np.asarray(text_image, dtype=np.int64)
    n_img, n_txt = image_emb.shape[0], text_emb.shape[0]
    out: dict = {"n_images": int(n_img), "n_captions": int(n_txt)}
    # rank = how many candidates score strictly higher than the true one (0 = best), in chunks
    # so a COCO-sized set (5k x 25k) never materialises more than a slice of the matrix
    t_rank = np.empty(n_txt, np.int64)
    for a in range(0, n_txt, chunk):
        s = text_emb[a:a + chunk] @ image_emb.T  # [c, images]
        true = s[np.arange(s.shape[0]), text_image[a:a + chunk]]
        t_rank[a:a + chunk] = (s > true[:, None]).sum(axis=1)
    i_rank = np.full(n_img, n_txt, np.int64)
    caps_of = np.argsort(text_image, kind="stable")
    bounds = np.searchsorted(text_image[caps_of], np.arange(n_img + 1))
    for a in range(0, n_img, max(1, chunk // 8)):
        b = min(n_img, a + max(1, chunk // 8))
        s = image_emb[a:b] @ text_emb.T  # [c, texts]
        caps = caps_of[bounds[a]:bounds[b]]
        rows = text_image[caps] - a
        true = s[rows, caps]
        r = (s[rows] > true[:, None]).sum(axis=1)
        np.minimum.at(i_rank, text_image[caps], r)
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((i_rank < k).mean()) if n_img else 0.0
        out[f"text_to_image_R@{k}"] = float((t_rank < k).mean()) if n_txt else 0.0
    out["mean_recall"] = float(np.mean([out[f"{d}_R@{k}"] for d in ("image_to_text", "text_to_image") for k in ks]))
    return out
