"""Web-style copies of a picture (the demo's ``near_duplicate`` noise): resized, re-encoded,
cropped, watermarked or framed, brightness/contrast changed; one or two edits per copy."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

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
