"""Decontamination finds planted near copies of evaluation images (real CIFAR-10 test images).

A random-init CLIP is not discriminative (all its image embeddings have cosine ~0.99), so
the augmented-crop test embeds with a small deterministic pixel model (8x8 RGB
thumbnails, centred, normalised: a perceptual-hash-like embedding) and hands the evaluation side over as
a table. The image-folder path (eval images embedded with the pool's open_clip model) is
tested with exact re-encoded copies, which a random model does map to the same point.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.embedding_space.jobs import run_decontaminate
from curate.tables import Dataset

from .helpers import uid, write_embeddings


def _thumb_embed(images) -> np.ndarray:
    out = []
    for im in images:
        a = np.asarray(im.convert("RGB").resize((8, 8), Image.BOX), dtype=np.float32).reshape(-1)
        a -= a.mean()
        out.append(a / max(np.linalg.norm(a), 1e-6))
    return np.stack(out)


def _crop(im: Image.Image, k: int) -> Image.Image:
    w, h = im.size
    box = [(1, 1, w, h), (0, 0, w - 1, h - 1), (1, 0, w, h - 1), (0, 1, w - 1, h)][k % 4]  # 1-px crops
    out = im.crop(box).resize((w, h), Image.BICUBIC)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=85)  # re-encoded, as a web copy would be
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _cifar(shared_data, per_class: int, start: int):
    root = shared_data / "cifar10_test"
    paths = []
    for c in sorted(p.name for p in root.iterdir() if p.is_dir()):
        paths += sorted((root / c).glob("*.jpg"))[start:start + per_class]
    return paths


def test_planted_crops_of_eval_images_are_removed(tmp_path, shared_data):
    eval_paths = _cifar(shared_data, 5, 0)            # 50 evaluation images
    other_paths = _cifar(shared_data, 20, 100)        # 200 unrelated pool images
    eval_imgs = [Image.open(p).convert("RGB") for p in eval_paths]
    planted_src = list(range(0, 50, 4))               # 13 eval images get a crop in the pool
    planted = [_crop(eval_imgs[i], k) for k, i in enumerate(planted_src)]
    pool = planted + [Image.open(p).convert("RGB") for p in other_paths]
    x = _thumb_embed(pool)
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "thumb", x, rows_per_shard=90)
    ev = _thumb_embed(eval_imgs).astype(np.float16)
    eval_ids = [f"{p.parent.name}/{p.name}" for p in eval_paths]
    eval_table = pa.table({"key": eval_ids,
                           "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(ev.reshape(-1)), ev.shape[1])})
    import pyarrow.parquet as pq

    pq.write_table(eval_table, tmp_path / "eval.parquet")
    r = run_decontaminate(ds, "thumb", str(tmp_path / "eval.parquet"), threshold=0.95)
    dec = {d["uid"]: d for d in r["decisions"].to_pylist()}
    removed = {u for u, d in dec.items() if not d["kept"]}
    assert removed == set(uids[:len(planted)])
    for k, i in enumerate(planted_src):
        assert dec[uids[k]]["detail"] == eval_ids[i] and dec[uids[k]]["reason"] == "eval_near_copy"
    report = {row["eval_id"]: row for row in ds.read("decontamination/decontaminate").to_pylist()}
    assert {e for e, row in report.items() if row["near_copies"]} == {eval_ids[i] for i in planted_src}
    assert report[eval_ids[0]]["nearest_uid"] == uids[0] and report[eval_ids[1]]["max_similarity"] is None
    assert r["counts"]["eval_images_with_copies"] == len(planted_src)
    assert r["counts"]["kept"] == 200 and r["counts"]["input"] == len(pool)


def test_eval_image_folder_embedded_with_pool_model(tmp_path, shared_data):
    import shutil

    from curate.embed import embed_images
    from curate.models import load_model

    eval_paths = _cifar(shared_data, 1, 0)            # 10 evaluation images, one per class
    eval_dir = tmp_path / "eval"
    for p in eval_paths:
        (eval_dir / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, eval_dir / p.parent.name / p.name)
    pool_paths = eval_paths[:3] + _cifar(shared_data, 3, 50)
    bundle = load_model("curate-tiny", seed=0)
    x = embed_images(bundle, [str(p) for p in pool_paths])
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, bundle.model_id, np.asarray(x), rows_per_shard=1000)
    r = run_decontaminate(ds, bundle.model_id, str(eval_dir), threshold=0.9999)
    removed = sorted(d["uid"] for d in r["decisions"].to_pylist() if not d["kept"])
    assert removed == sorted(uids[:3])
    assert r["counts"]["eval_images"] == 10 and r["counts"]["eval_images_with_copies"] == 3
    # eval images are embedded with the pool's model; another model's space is refused
    from curate.embedding_space.jobs import load_eval_embeddings

    with pytest.raises(Exception, match="pool embeddings are curate-tiny__random-seed7"):
        load_eval_embeddings(str(eval_dir), ds, "curate-tiny__random-seed7", model_name="curate-tiny")


def test_an_undecodable_eval_image_is_left_out_said_and_counted(tmp_path, shared_data, capsys):
    """One broken file in an evaluation folder does not stop the job: the others are searched,
    the broken ones are named in a warning, counted, and listed in the manifest."""
    import json
    import shutil

    from curate.cli import main
    from curate.embed import embed_images
    from curate.models import load_model

    eval_paths = _cifar(shared_data, 1, 0)
    eval_dir = tmp_path / "eval"
    for p in eval_paths:
        (eval_dir / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, eval_dir / p.parent.name / p.name)
    (eval_dir / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    (eval_dir / "dog" / "cut.jpg").write_bytes(eval_paths[5].read_bytes()[:200])  # truncated JPEG
    bundle = load_model("curate-tiny", seed=0)
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, bundle.model_id, np.asarray(embed_images(bundle, [str(p) for p in eval_paths[:2]])),
                            rows_per_shard=1000)
    with pytest.raises(SystemExit) as info:
        main(["decontaminate", str(ds.root), "--eval", str(eval_dir), "--threshold", "0.9999", "--engine", "local"])
    out = capsys.readouterr()
    assert info.value.code in (0, None), out.err
    warning = [line for line in (out.out + out.err).splitlines() if "could not be decoded" in line]
    assert len(warning) == 1 and "cat/broken.jpg (decode_error" in warning[0] and "dog/cut.jpg (" in warning[0]
    assert str(eval_dir) not in warning[0]  # ids, not the folder's path
    assert "2 of 10 evaluation images had near copies" in out.out
    manifest = json.loads((ds.root / "_runs" / "decontaminate.json").read_text())
    assert manifest["counts"]["eval_images_undecodable"] == 2 and manifest["counts"]["removed"] == len(uids)
    assert sorted(u["eval_id"] for u in manifest["eval_undecodable"]) == ["cat/broken.jpg", "dog/cut.jpg"]
    report = ds.read("decontamination/decontaminate").column("eval_id").to_pylist()
    assert len(report) == 10 and "cat/broken.jpg" not in report
