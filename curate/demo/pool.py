"""A procedural image-text pool with known ground truth and controlled noise.

Clean pairs: an object of some shape, colour, size and texture, placed, sized and turned at
random on a background with its own smooth light and shade and a grey distractor shape, with a
caption that describes the object ("a large red striped circle"). Distinct pictures are
distinct as images, as distinct photos are: a perceptual hash tells them apart even when they
show the same concept (docs/demo.md, "Perceptual duplicates"). Noise, each at a set rate and
labelled in ``truth.parquet`` so the effect of every curation step can be checked:

- ``swapped``: the caption of another image (the web's misattached alt-text),
- ``non_english``: a correct description in German, French or Spanish,
- ``spam``: advertising / boilerplate text on a random image,
- ``duplicate``: the same image bytes under another URL, same caption,
- ``near_duplicate``: a copy of another sample's picture as the web copies it (one or two of:
  resized, re-encoded, cropped, watermarked or framed, brightness/contrast changed), same caption,
- ``tiny``: a 12 px image, ``extreme_aspect``: a 256x24 strip,
- ``broken``: a URL that answers 404.

``truth.parquet`` also names, for a duplicate or near-duplicate, the ``source`` file it copies
(its own file otherwise), so the true duplicate groups are known.

Everything is a pure function of the seed: the same call writes the same files. The pictures
and captions are drawn by ``curate.demo.scenes``, the web-style copies by ``curate.demo.web_copy``.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.demo.scenes import (COLOURS, SHAPES, SIZES, TEXTURES, TRANSLATIONS, Scene,  # noqa: F401 - re-exported
                                jpeg_bytes, png_bytes, caption, random_scene, render, translated_caption)
from curate.demo.web_copy import web_copy

SPAM = (
    "BUY NOW best price guaranteed {n}% off free shipping worldwide",
    "click here to win a free phone limited offer {n}",
    "cheap replica watches online store discount code SAVE{n}",
    "follow us for daily deals and giveaways promo {n}",
    "download free hd wallpapers 4k background image {n}",
    "hot singles in your area sign up today {n}",
    "lorem ipsum dolor sit amet consectetur adipiscing elit {n}",
    "image {n} jpg",
)

NOISE_KINDS = ("swapped", "non_english", "spam", "duplicate", "near_duplicate", "tiny", "extreme_aspect", "broken")


@dataclass
class NoiseRates:
    swapped: float = 0.25
    non_english: float = 0.08
    spam: float = 0.06
    duplicate: float = 0.06
    near_duplicate: float = 0.06
    tiny: float = 0.03
    extreme_aspect: float = 0.03
    broken: float = 0.02

    def total(self) -> float:
        return sum(asdict(self).values())


@dataclass
class PoolSpec:
    n: int = 3000
    seed: int = 0
    image_size: int = 64
    noise: NoiseRates = field(default_factory=NoiseRates)


def generate_pool(out: Path, spec: PoolSpec, base_url: str = "{base}") -> dict:
    """Write ``out/www/img/*`` (served), ``out/pool.parquet`` (url, text) and ``out/truth.parquet``.

    URLs are ``{base_url}/img/<file>``; with the default ``{base}`` placeholder the pool file
    is rewritten by ``bind_pool`` once the server's port is known.
    """
    rng = np.random.default_rng(spec.seed)
    www = out / "www" / "img"
    www.mkdir(parents=True, exist_ok=True)
    rates = asdict(spec.noise)
    kinds = ["clean"] + list(rates)
    probs = np.array([max(0.0, 1 - spec.noise.total())] + list(rates.values()))
    draw = rng.choice(len(kinds), size=spec.n, p=probs / probs.sum())
    scenes = [random_scene(rng) for _ in range(spec.n)]
    captions = [caption(sc, rng) for sc in scenes]
    clean = [i for i in range(spec.n) if kinds[draw[i]] == "clean"] or [0]
    # one row at a time: the rows draw from ``rng`` in pool order (the pool is a function of the seed)
    rows = [_pool_row(i, kinds[draw[i]], spec, scenes, captions, clean, rng, www) for i in range(spec.n)]
    _write_truth(rows, base_url, out / "truth.parquet")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["noise"]] = counts.get(r["noise"], 0) + 1
    return {"n": spec.n, "noise": dict(sorted(counts.items())), "truth": str(out / "truth.parquet")}


def _pool_row(i: int, kind: str, spec: PoolSpec, scenes: list[Scene], captions: list[str], clean: list[int],
              rng: np.random.Generator, www: Path) -> dict:
    """Sample ``i`` with its noise ``kind``: its picture written under ``www`` (none when
    broken) and its truth row."""
    scene, text = scenes[i], captions[i]
    fname = f"{i:06d}.png"
    w = h = spec.image_size
    source = fname  # the image this one shows: itself, or the clean sample it copies
    if kind in ("duplicate", "near_duplicate"):
        # a copy of a clean sample anywhere in the pool: same scene, render seed and caption
        src = int(rng.choice(clean))
        source = f"{src:06d}.png"
        scene, text = scenes[src], captions[src]
        seed_img = spec.seed * 1_000_003 + src  # same render seed as the source
    else:
        seed_img = spec.seed * 1_000_003 + i
    if kind in ("swapped", "non_english", "spam"):
        text = _noisy_caption(kind, scene, scenes, clean, rng)
    elif kind == "tiny":
        w = h = 12
    elif kind == "extreme_aspect":
        w, h = 256, 24
    edits = ""
    if kind != "broken":
        img = render(scene, w, h, seed=seed_img)
        if kind == "near_duplicate":  # the source picture copied as the web copies it
            img, edits = _near_copy(img, rng)
            w, h = img.size
        (www / fname).write_bytes(png_bytes(img))
    return {"file": fname, "source": source, "text": text, "noise": kind, "shape": scene.shape, "colour": scene.colour,
            "size": scene.size, "texture": scene.texture, "width": w, "height": h, "edits": edits}


def _noisy_caption(kind: str, scene: Scene, scenes: list[Scene], clean: list[int], rng: np.random.Generator) -> str:
    """The caption of a ``swapped``, ``non_english`` or ``spam`` sample."""
    if kind == "swapped":
        other = scenes[int(rng.choice(clean))]
        while other.shape == scene.shape and other.colour == scene.colour:
            other = random_scene(rng)
        return caption(other, rng)
    if kind == "non_english":
        return translated_caption(scene, str(rng.choice(list(TRANSLATIONS))))
    return str(rng.choice(SPAM)).format(n=int(rng.integers(1, 99)))


def _near_copy(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A web-style copy of ``img`` and its edits, in order (``crop+jpeg55``)."""
    img, done, quality = web_copy(img, rng)
    if quality:  # re-encoded: the JPEG's pixels, stored losslessly
        img = Image.open(io.BytesIO(jpeg_bytes(img, quality=quality))).convert("RGB")
    return img, "+".join(e if e != "reencode" else f"jpeg{quality}" for e in done)


def _write_truth(rows: list[dict], base_url: str, path: Path) -> None:
    urls = [f"{base_url}/img/{r['file']}" for r in rows]
    truth = pa.table({
        "url": urls, "text": [r["text"] for r in rows], "noise": [r["noise"] for r in rows],
        "shape": [r["shape"] for r in rows], "colour": [r["colour"] for r in rows],
        "size": [r["size"] for r in rows], "texture": [r["texture"] for r in rows],
        "width": pa.array([r["width"] for r in rows], pa.int32()),
        "height": pa.array([r["height"] for r in rows], pa.int32()),
        # duplicates and near-duplicates name the file they copy: the true duplicate groups
        "source": [r["source"] for r in rows],
        # a near-duplicate's edits, in order ("crop+jpeg55"); empty for every other row
        "edits": [r["edits"] for r in rows],
    })
    pq.write_table(truth, path)


def bind_pool(out: Path, base_url: str) -> Path:
    """``pool.parquet`` (url, text) for ingest, with the server's address filled in."""
    truth = pq.read_table(out / "truth.parquet")
    urls = [u.replace("{base}", base_url.rstrip("/")) for u in truth.column("url").to_pylist()]
    path = out / "pool.parquet"
    pq.write_table(pa.table({"url": urls, "text": truth.column("text")}), path)
    return path


def generate_clean_shards(out: Path, n: int, seed: int, image_size: int = 64, per_shard: int = 2000) -> list[str]:
    """Clean WebDataset shards (jpg + txt): the seed set a data-filtering network is trained on."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, n, per_shard):
        p = out / f"{start // per_shard:05d}.tar"
        with tarfile.open(p, "w") as tf:
            for i in range(start, min(n, start + per_shard)):
                scene = random_scene(rng)
                for name, data in ((f"{i:08d}.jpg", jpeg_bytes(render(scene, image_size, image_size, seed=seed * 7919 + i))),
                                   (f"{i:08d}.txt", caption(scene, rng).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 0
                    tf.addfile(info, io.BytesIO(data))
        paths.append(str(p))
    return paths


def generate_eval(out: Path, seed: int, per_class: int = 8, retrieval_n: int = 300, image_size: int = 64) -> dict:
    """A separately generated, clean evaluation set.

    ``zeroshot/<colour>_<shape>/*.jpg`` (36 classes) and ``retrieval/images + captions.csv``.
    """
    rng = np.random.default_rng(seed)
    zs = out / "zeroshot"
    n = 0
    for shape in SHAPES:
        for colour in COLOURS:
            d = zs / f"{colour}_{shape}"
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                scene = random_scene(rng, shapes=(shape,), colours=(colour,))
                (d / f"{k:03d}.jpg").write_bytes(jpeg_bytes(render(scene, image_size, image_size, seed=seed * 104729 + n)))
                n += 1
    rt = out / "retrieval"
    (rt / "images").mkdir(parents=True, exist_ok=True)
    with open(rt / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i in range(retrieval_n):
            scene = random_scene(rng)
            name = f"{i:05d}.jpg"
            (rt / "images" / name).write_bytes(jpeg_bytes(render(scene, image_size, image_size, seed=seed * 15485863 + i)))
            w.writerow([name, caption(scene, rng)])
    meta = {"zeroshot": str(zs), "zeroshot_images": n, "classes": len(SHAPES) * len(COLOURS),
            "retrieval": str(rt), "retrieval_images": retrieval_n, "seed": seed}
    (out / "eval.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
