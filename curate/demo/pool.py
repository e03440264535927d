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

Everything is a pure function of the seed: the same call writes the same files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 215),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (240, 130, 30),
}
SIZES = ("small", "large")
TEXTURES = ("plain", "striped", "dotted", "checkered")

TRANSLATIONS = {
    "de": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "star": "Stern", "cross": "Kreuz",
           "ring": "Ring", "red": "roter", "green": "grüner", "blue": "blauer", "yellow": "gelber",
           "purple": "violetter", "orange": "oranger", "small": "kleiner", "large": "großer",
           "plain": "einfarbig", "striped": "mit Streifen", "dotted": "mit Punkten", "checkered": "kariert",
           "_tmpl": "ein {size} {colour} {shape} {texture} auf hellem Hintergrund"},
    "fr": {"circle": "cercle", "square": "carré", "triangle": "triangle", "star": "étoile", "cross": "croix",
           "ring": "anneau", "red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune",
           "purple": "violet", "orange": "orange", "small": "petit", "large": "grand",
           "plain": "uni", "striped": "à rayures", "dotted": "à pois", "checkered": "à carreaux",
           "_tmpl": "un {size} {shape} {colour} {texture} sur un fond clair"},
    "es": {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo", "star": "estrella",
           "cross": "cruz", "ring": "anillo", "red": "rojo", "green": "verde", "blue": "azul",
           "yellow": "amarillo", "purple": "morado", "orange": "naranja", "small": "pequeño",
           "large": "grande", "plain": "liso", "striped": "con rayas", "dotted": "con puntos",
           "checkered": "a cuadros", "_tmpl": "un {shape} {colour} {size} {texture} sobre un fondo claro"},
}

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

TEXTURE_PHRASE = {"plain": "", "striped": "striped", "dotted": "dotted", "checkered": "checkered"}
TEMPLATES = (
    "a {size} {colour} {texture}{shape}",
    "a photo of a {size} {colour} {texture}{shape}",
    "a {size} {texture}{shape} in {colour}",
    "{size} {colour} {texture}{shape} on a light background",
    "a picture of a {colour} {texture}{shape}, {size}",
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


@dataclass(frozen=True)
class Scene:
    """One picture: the object (shape, colour, size, texture, where) that the caption names, on
    a background and with a grey distractor that make distinct pictures distinct as images."""

    shape: str
    colour: str
    size: str
    texture: str
    bg: tuple[int, int, int]  # background tint (a light, low-saturation colour)
    cx: float  # object centre, fraction of the canvas
    cy: float
    angle: float
    scale: float = 0.36  # object radius, fraction of the shorter side
    # background lightness on a coarse grid, interpolated smoothly across the canvas
    field: tuple[float, ...] = ()
    # a grey shape that is not the object: (kind, x, y, radius, grey level, angle)
    distractor: tuple = ()

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


FIELD_GRID = 4  # the background's lightness grid (4x4 knots): low-frequency structure, as photos have
FIELD_LOW = 0.35
DISTRACTORS = ("disc", "box", "bar")


def random_scene(rng: np.random.Generator, shapes=SHAPES, colours=tuple(COLOURS)) -> Scene:
    """A random picture. Distinct pictures differ as images, not only in what they show: the
    object's place, size and rotation vary widely, the background has its own smooth light
    and shade, and a grey distractor sits somewhere else; so a perceptual hash of two
    pictures of the same "large red circle" is as far apart as two photos' (docs/demo.md)."""
    shape, colour, size, texture = (str(rng.choice(shapes)), str(rng.choice(colours)), str(rng.choice(SIZES)),
                                    str(rng.choice(TEXTURES)))
    bg = tuple(int(v) for v in rng.integers(205, 250, size=3))
    scale = float(rng.uniform(0.14, 0.2) if size == "small" else rng.uniform(0.27, 0.36))
    lo, hi = max(0.2, scale * 0.8), min(0.8, 1 - scale * 0.8)
    cx, cy = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
    angle = float(rng.uniform(0, 2 * math.pi))
    field = tuple(float(v) for v in rng.uniform(FIELD_LOW, 1.0, FIELD_GRID * FIELD_GRID))
    distractor = (str(rng.choice(DISTRACTORS)), float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)),
                  float(rng.uniform(0.08, 0.2)), int(rng.integers(30, 230)), float(rng.uniform(0, math.pi)))
    return Scene(shape=shape, colour=colour, size=size, texture=texture, bg=bg,  # type: ignore[arg-type]
                 cx=cx, cy=cy, angle=angle, scale=scale, field=field, distractor=distractor)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    tex = TEXTURE_PHRASE[scene.texture]
    t = str(rng.choice(TEMPLATES))
    return t.format(size=scene.size, colour=scene.colour, texture=f"{tex} " if tex else "", shape=scene.shape)


def translated_caption(scene: Scene, lang: str) -> str:
    d = TRANSLATIONS[lang]
    return d["_tmpl"].format(size=d[scene.size], colour=d[scene.colour], shape=d[scene.shape],
                             texture=d[scene.texture])


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(angle + math.pi / 4 + k * math.pi / 2), math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    elif shape == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif shape == "star":
        pts = [((1 if k % 2 == 0 else 0.45) * math.cos(angle + k * math.pi / 5),
                (1 if k % 2 == 0 else 0.45) * math.sin(angle + k * math.pi / 5)) for k in range(10)]
    elif shape == "cross":
        a, b = 1.0, 0.33
        base = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(x * ca - y * sa, x * sa + y * ca) for x, y in base]
    else:
        raise ValueError(shape)
    return [(cx + r * x, cy + r * y) for x, y in pts]


def _texture(size: tuple[int, int], texture: str, colour: tuple[int, int, int], scale: int) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, colour)
    if texture == "plain":
        return img
    d = ImageDraw.Draw(img)
    light = tuple(min(255, c + 110) for c in colour)
    step = max(3, scale)
    if texture == "striped":
        for x in range(-h, w + h, 2 * step):
            d.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=light)
    elif texture == "dotted":
        for y in range(step // 2, h, 2 * step):
            for x in range(step // 2, w, 2 * step):
                d.ellipse((x, y, x + step, y + step), fill=light)
    elif texture == "checkered":
        for y in range(0, h, step):
            for x in range(0, w, step):
                if (x // step + y // step) % 2:
                    d.rectangle((x, y, x + step - 1, y + step - 1), fill=light)
    return img


def _background(scene: Scene, width: int, height: int) -> np.ndarray:
    """The tint times a smooth lightness field (bicubic through the scene's knots)."""
    if not scene.field:
        return np.full((height, width, 3), scene.bg, dtype=np.float32)
    g = FIELD_GRID
    knots = Image.fromarray(np.asarray(scene.field, dtype=np.float32).reshape(g, g), mode="F")
    light = np.asarray(knots.resize((width, height), Image.BICUBIC), dtype=np.float32)
    return np.clip(light, 0.3, 1.05)[..., None] * np.asarray(scene.bg, dtype=np.float32)[None, None, :]


def _draw_distractor(img: Image.Image, scene: Scene) -> None:
    if not scene.distractor:
        return
    kind, x, y, r, grey, angle = scene.distractor
    w, h = img.size
    m = min(w, h)
    x, y, r = x * w, y * h, r * m
    d = ImageDraw.Draw(img)
    fill = (grey, grey, grey)
    if kind == "disc":
        d.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif kind == "box":
        d.rectangle((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=fill)
    else:  # a bar: a long thin rotated rectangle
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(-2.2, -0.3), (2.2, -0.3), (2.2, 0.3), (-2.2, 0.3)]
        d.polygon([(x + r * (px * ca - py * sa), y + r * (px * sa + py * ca)) for px, py in pts], fill=fill)


def render(scene: Scene, width: int = 64, height: int = 64, jitter: tuple[int, int] = (0, 0),
           noise: float = 4.0, seed: int = 0) -> Image.Image:
    """Draw a scene: background, distractor, then the object; ``jitter`` shifts the object (pixels)."""
    rng = np.random.default_rng(seed)
    base = _background(scene, width, height)
    base += rng.normal(0, noise, size=base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    _draw_distractor(img, scene)
    m = min(width, height)
    r = m * scene.scale
    cx, cy = scene.cx * width + jitter[0], scene.cy * height + jitter[1]
    mask = Image.new("L", (width, height), 0)
    md = ImageDraw.Draw(mask)
    if scene.shape == "circle":
        md.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif scene.shape == "ring":
        md.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        md.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=0)
    else:
        md.polygon(_polygon(scene.shape, cx, cy, r, scene.angle), fill=255)
    fill = _texture((width, height), scene.texture, COLOURS[scene.colour], scale=max(2, m // 16))
    img.paste(fill, (0, 0), mask)
    return img


WATERMARKS = ("© stockpix", "sample", "shop.example", "@daily_pics", "PREVIEW", "wallpapers4u")
CROP_MAX = 0.08
COPY_EDITS = ("resize", "reencode", "crop", "overlay", "tone")


def web_copy(img: Image.Image, rng: np.random.Generator,
             edits: list[str] | None = None) -> tuple[Image.Image, list[str], int]:
    """A copy of a picture as the web makes them: one or two of resized (down or up),
    re-encoded at a random JPEG quality, cropped (at most 8% of each side's length in all),
    a watermark or a border, a brightness/contrast change. Returns (image, edits, JPEG quality
    the copy is finally saved at; 0 for PNG)."""
    from PIL import ImageEnhance, ImageFont

    if edits is None:
        edits = [str(e) for e in rng.choice(COPY_EDITS, size=int(rng.integers(1, 3)), replace=False)]
    edits = sorted(edits, key=COPY_EDITS.index)
    out = img
    quality = 0
    for e in edits:
        w, h = out.size
        if e == "crop":  # 2-8% of the area, split between width and height and between the sides
            area = float(rng.uniform(0.02, CROP_MAX))
            share = float(rng.uniform(0.25, 0.75))
            cw, ch = int(round(w * area * share)), int(round(h * area * (1 - share)))
            left, top = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
            out = out.crop((left, top, w - (cw - left), h - (ch - top)))
        elif e == "overlay":
            out = out.copy()
            d = ImageDraw.Draw(out)
            if rng.random() < 0.5:  # a thin border (1 px in 64), as a framed re-post
                b = max(1, min(w, h) // 64)
                grey = int(rng.choice((0, 255, int(rng.integers(0, 256)))))
                d.rectangle((0, 0, w - 1, h - 1), outline=(grey, grey, grey), width=b)
            else:  # a watermark in a corner
                font = ImageFont.load_default(size=max(5, min(w, h) // 10))
                text = str(rng.choice(WATERMARKS))
                box = font.getbbox(text)
                x = int(rng.integers(0, max(1, w - (box[2] - box[0]))))
                y = int(rng.choice((1, max(1, h - (box[3] - box[1]) - 3))))
                layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
                ImageDraw.Draw(layer).text((x, y), text, font=font, fill=(255, 255, 255, int(rng.integers(70, 150))))
                out = Image.alpha_composite(out.convert("RGBA"), layer).convert("RGB")
        elif e == "tone":
            out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.85, 1.15)))
            out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.85, 1.15)))
        elif e == "resize":  # a thumbnail or an upscale, the aspect kept
            f = float(rng.choice((rng.uniform(0.6, 0.85), rng.uniform(1.25, 2.0))))
            out = out.resize((max(8, int(round(w * f))), max(8, int(round(h * f)))),
                             (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS)[int(rng.integers(0, 3))])
        elif e == "reencode":
            quality = int(rng.integers(30, 86))
    return out, edits, quality


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


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
    s = spec.image_size
    scenes = [random_scene(rng) for _ in range(spec.n)]
    captions = [caption(sc, rng) for sc in scenes]
    clean = [i for i in range(spec.n) if kinds[draw[i]] == "clean"] or [0]
    rows: list[dict] = []
    for i in range(spec.n):
        kind = kinds[draw[i]]
        scene = scenes[i]
        text = captions[i]
        fname = f"{i:06d}.png"
        w, h = s, s
        edits = ""
        source = fname  # the image this one shows: itself, or the clean sample it copies
        if kind in ("duplicate", "near_duplicate"):
            # a copy of a clean sample anywhere in the pool: same scene, render seed and caption
            src = int(rng.choice(clean))
            source = f"{src:06d}.png"
            scene = scenes[src]
            text = captions[src]
            seed_img = spec.seed * 1_000_003 + src  # same render seed as the source
        else:
            seed_img = spec.seed * 1_000_003 + i
        if kind == "swapped":
            other = scenes[int(rng.choice(clean))]
            while other.shape == scene.shape and other.colour == scene.colour:
                other = random_scene(rng)
            text = caption(other, rng)
        elif kind == "non_english":
            text = translated_caption(scene, str(rng.choice(list(TRANSLATIONS))))
        elif kind == "spam":
            text = str(rng.choice(SPAM)).format(n=int(rng.integers(1, 99)))
        elif kind == "tiny":
            w = h = 12
        elif kind == "extreme_aspect":
            w, h = 256, 24
        if kind != "broken":
            img = render(scene, w, h, seed=seed_img)
            if kind == "near_duplicate":  # the source picture copied as the web copies it
                img, done, quality = web_copy(img, rng)
                if quality:  # re-encoded: the JPEG's pixels, stored losslessly
                    img = Image.open(io.BytesIO(_jpeg(img, quality=quality))).convert("RGB")
                edits = "+".join(e if e != "reencode" else f"jpeg{quality}" for e in done)
                w, h = img.size
            (www / fname).write_bytes(_png(img))
        rows.append({"file": fname, "source": source, "text": text, "noise": kind, "shape": scene.shape, "colour": scene.colour,
                     "size": scene.size, "texture": scene.texture, "width": w, "height": h, "edits": edits})
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
    pq.write_table(truth, out / "truth.parquet")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["noise"]] = counts.get(r["noise"], 0) + 1
    return {"n": spec.n, "noise": dict(sorted(counts.items())), "truth": str(out / "truth.parquet")}


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
                for name, data in ((f"{i:08d}.jpg", _jpeg(render(scene, image_size, image_size, seed=seed * 7919 + i))),
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
                (d / f"{k:03d}.jpg").write_bytes(_jpeg(render(scene, image_size, image_size, seed=seed * 104729 + n)))
                n += 1
    rt = out / "retrieval"
    (rt / "images").mkdir(parents=True, exist_ok=True)
    with open(rt / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i in range(retrieval_n):
            scene = random_scene(rng)
            name = f"{i:05d}.jpg"
            (rt / "images" / name).write_bytes(_jpeg(render(scene, image_size, image_size, seed=seed * 15485863 + i)))
            w.writerow([name, caption(scene, rng)])
    meta = {"zeroshot": str(zs), "zeroshot_images": n, "classes": len(SHAPES) * len(COLOURS),
            "retrieval": str(rt), "retrieval_images": retrieval_n, "seed": seed}
    (out / "eval.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
