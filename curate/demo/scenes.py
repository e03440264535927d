"""The demo's pictures and captions: a scene (an object of some shape, colour, size and texture,
placed, sized and turned at random on a background with its own smooth light and shade, and a
grey distractor shape), its rendering, and the captions that describe it (English templates,
German/French/Spanish translations). Everything is a pure function of the generator or seed
given."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
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

TEXTURE_PHRASE = {"plain": "", "striped": "striped", "dotted": "dotted", "checkered": "checkered"}
TEMPLATES = (
    "a {size} {colour} {texture}{shape}",
    "a photo of a {size} {colour} {texture}{shape}",
    "a {size} {texture}{shape} in {colour}",
    "{size} {colour} {texture}{shape} on a light background",
    "a picture of a {colour} {texture}{shape}, {size}",
)


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


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
