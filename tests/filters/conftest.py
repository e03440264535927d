"""Pools for the filter tests: samples (and embeddings) tables written directly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.tables import Dataset

ENGLISH = ["a dog running on the beach", "two people riding bicycles in the park",
           "a red car parked near a building", "a plate of food with vegetables",
           "a cat sleeping on a sofa", "children playing football in a field"]
OTHER = ["un chien qui court sur la plage", "ein Hund läuft am Strand entlang",
         "un perro corriendo en la playa", "собака бежит по пляжу", "海滩上奔跑的狗"]


def uid_of(i: int) -> str:
    return f"{(i * 0x9E3779B97F4A7C15 + 12345) % (1 << 128):032x}"


def write_samples(ds: Dataset, texts, widths, heights, uids=None, rows_per_shard: int = 1_000_000) -> list[str]:
    n = len(texts)
    uids = list(uids) if uids is not None else [uid_of(i) for i in range(n)]
    t = pa.table({
        "uid": pa.array(uids, pa.string()),
        "url": pa.array([f"http://127.0.0.1/{i}.jpg" for i in range(n)], pa.string()),
        "text": pa.array(texts, pa.string()),
        "source_file": pa.array(["/in/pool.parquet"] * n, pa.string()),
        "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array(widths, pa.int32()),
        "original_height": pa.array(heights, pa.int32()),
        "extra": pa.nulls(n, pa.string()),
    })
    ds.write_table("samples", t.sort_by("uid"), schema="samples", rows_per_shard=rows_per_shard)
    return uids


def write_embeddings(ds: Dataset, model: str, uids, scores, image: np.ndarray | None = None, dim: int = 8,
                     rows_per_shard: int = 1_000_000, seed: int = 0) -> np.ndarray:
    n = len(uids)
    rng = np.random.default_rng(seed)
    if image is None:
        image = rng.normal(size=(n, dim))
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = rng.normal(size=image.shape)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    d = image.shape[1]

    def fsl(x):
        return pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float16).ravel(), pa.float16()), d)

    t = pa.table({"uid": pa.array(list(uids), pa.string()), "image_embedding": fsl(image),
                  "text_embedding": fsl(text), "clip_score": pa.array(np.asarray(scores, np.float32), pa.float32())})
    ds.write_table(f"embeddings/{model}", t, schema="embeddings", rows_per_shard=rows_per_shard)
    return image.astype(np.float16).astype(np.float32)


@pytest.fixture
def pool(tmp_dataset):
    """60 samples: English and other captions, varied sizes, 3 shards; embeddings for 50."""
    rng = np.random.default_rng(1)
    n = 60
    texts = [(ENGLISH + OTHER)[i % 11] for i in range(n)]
    widths = [int(w) for w in rng.choice([100, 200, 640, 1000], n)]
    heights = [int(h) for h in rng.choice([150, 200, 480, 2500], n)]
    uids = write_samples(tmp_dataset, texts, widths, heights, rows_per_shard=25)
    scores = rng.uniform(0.1, 0.4, 50).round(2)  # rounding makes ties
    write_embeddings(tmp_dataset, "tiny", uids[:50], scores, rows_per_shard=20)
    return tmp_dataset


@pytest.fixture
def writers():
    """(write_samples, write_embeddings) for tests that build their own tables."""
    return write_samples, write_embeddings
