"""image_based's guards: the embeddings it clusters are checked (a random-init model's are
degenerate) and removing most of the pool is a warning, in the run manifest, the subset's
manifest and the command summary; well-spread embeddings raise nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.cli import main
from curate.engine import LocalExecutor
from curate.filters.job import run_filters
from curate.filters.stages import parse_filter
from curate.subset import read_subset_manifest


def test_random_init_embeddings_warn(tmp_dataset, writers, tmp_path, capsys):
    from PIL import Image

    from curate.embed.core import embed_images
    from curate.manifest import RunManifest
    from curate.models import load_model

    write_samples, write_embeddings = writers
    rng = np.random.default_rng(0)
    paths = []
    for i in range(30):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    bundle = load_model("curate-tiny", seed=0)
    x = embed_images(bundle, paths)
    uids = write_samples(tmp_dataset, ["a photo of a small coloured square"] * 30, [640] * 30, [480] * 30)
    write_embeddings(tmp_dataset, bundle.model_id, uids, [0.3] * 30, image=x)
    RunManifest("embed", {"model": "curate-tiny", "pretrained": None, "seed": 0}).write(
        tmp_dataset, f"embed-{bundle.model_id}")
    np.save(tmp_path / "target.npy", x[:1])
    with pytest.raises(SystemExit) as e:
        main(["filter", str(tmp_dataset.root), "-f", f"image_based:k=3,target={tmp_path / 'target.npy'}",
              "--name", "ib", "--engine", "local"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    m = json.loads((tmp_dataset.root / "_runs" / "filter-ib.json").read_text())
    g = m["guards"]
    assert g["distributions"]["embeddings"]["median"] > 0.9
    assert any("embeddings look degenerate" in w for w in g["warnings"])
    assert "warning: embeddings look degenerate" in out
    assert "cosine of a sample to its nearest centroid (n=30)" in out
    assert g["distributions"]["acted_on"]["quantiles"]["p50"] > 0.9
    removed = 30 - m["counts"]["filters"]["image_based"].get("kept", 0)
    assert (removed > 15) == any("image_based removed" in w for w in g["warnings"])
    assert read_subset_manifest(tmp_dataset, "ib")["resolved"]["image_based"]["guards"]["warnings"] == g["warnings"]


def test_well_spread_embeddings_raise_nothing(pool):
    np.save(pool.root / "target.npy", np.random.default_rng(3).normal(size=(20, 8)).astype(np.float32))
    r = run_filters(pool, [parse_filter(f"image_based:k=2,target={pool.root / 'target.npy'}")],
                    LocalExecutor(), name="ib")
    g = r["guards"]
    assert g["distributions"]["embeddings"]["median"] < 0.5
    assert not any("degenerate" in w for w in g["warnings"])
