"""Decoding web images into the pixels a viewer shows, shared by download and embed.

A browser shows a photo upright (EXIF/TIFF orientation applied), in sRGB (an embedded
colour profile applied), maps 16-bit and float samples onto 8 bits by scale (not by
clipping), composites transparency over the page,
converts CMYK and palette images to RGB and shows the first frame of an animation. Pillow
decodes; its optional plugins (pillow-heif for HEIC, pillow-jxl for JPEG XL) are used when
installed.
"""

from __future__ import annotations

import importlib

import numpy as np
from PIL import Image, ImageOps


def _register_plugins() -> list[str]:
    found = []
    for module, register in (("pillow_heif", "register_heif_opener"), ("pillow_avif", None), ("pillow_jxl", None)):
        try:
            m = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - an optional plugin that is absent or broken is just not used
            continue
        if register:
            getattr(m, register)()
        found.append(module)
    return found


PLUGINS = _register_plugins()

# Formats known by their first bytes, for a file that no installed decoder can read:
# (test over the first 64 bytes, name). Pillow-readable formats that fail to decode are
# decode errors, not listed here.
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC", b"heim": "HEIC",
                b"heis": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF",
                b"jxl ": "JPEG XL", b"crx ": "Canon RAW"}


def sniff_image_format(data: bytes) -> str | None:
    """The name of an image format ``data`` announces, for formats nothing here decodes."""
    head = data[:64]
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP_BRANDS:
        return _FTYP_BRANDS[head[8:12]]
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if head.startswith(b"v/1\x01"):
        return "OpenEXR"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "Radiance HDR"
    if head.startswith(b"BPG\xfb"):
        return "BPG"
    if head.startswith(b"FLIF"):
        return "FLIF"
    if head.startswith(b"II\xbc"):
        return "JPEG XR"
    if head.startswith(b"AT&TFORM"):
        return "DjVu"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if (text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text)) and b"<html" not in text:
        return "SVG"
    return None


def orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no orientation, as in browsers
        return 1


def needs_viewer_decode(data: bytes) -> bool:
    """True when encoded image bytes carry an EXIF rotation or a non-sRGB colour profile,
    which a decoder that ignores both (nvJPEG, OpenCV) would get wrong. Reads only the
    header, and only when the first bytes hold EXIF or ICC data at all."""
    head = data[:131072]
    if b"Exif\x00\x00" not in head and b"eXIf" not in head and b"ICC_PROFILE" not in head and b"iCCP" not in head:
        return False  # the common case, without parsing
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            return orientation(im) != 1 or icc_needs_conversion(im)
    except Exception:  # noqa: BLE001 - undecodable bytes are the decoder's to report
        return False


def icc_needs_conversion(im: Image.Image) -> bool:
    """True when ``im`` carries a colour profile other than sRGB that a colour-managed
    viewer would apply (RGB, RGBA and CMYK images). Unreadable profiles are ignored, as
    browsers ignore them."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return False
    try:
        import io

        from PIL import ImageCms

        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:  # noqa: BLE001
        return False
    return "srgb" not in description.lower().replace(" ", "")


def to_srgb(im: Image.Image) -> Image.Image:
    """``im`` converted from its embedded colour profile to sRGB (perceptual intent), when it
    has one other than sRGB; RGBA keeps its alpha."""
    if not icc_needs_conversion(im):
        return im
    import io

    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"),
                                        outputMode="RGBA" if im.mode == "RGBA" else "RGB")
    except Exception:  # noqa: BLE001 - a profile LittleCMS cannot use is ignored, as browsers do
        return im
    out.info.pop("icc_profile", None)
    return out


def upright(im: Image.Image) -> Image.Image:
    """``im`` with its EXIF orientation applied (a copy when it had one)."""
    try:
        return ImageOps.exif_transpose(im) if orientation(im) != 1 else im
    except Exception:  # noqa: BLE001
        return im


def _scaled(a: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Samples to uint8: by ``full_scale`` (the value shown as white) or, when None, by
    the image's own range."""
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        lo, hi = float(a.min()), float(a.max())
        a, full_scale = a - lo, (hi - lo) or 1.0
    return np.rint(np.clip(a * (255.0 / full_scale), 0, 255)).astype(np.uint8)


def to_8bit(im: Image.Image) -> Image.Image:
    """An 8-bit image in L, LA, RGB or RGBA with the same appearance.

    16-bit grey (``I;16*``) is scaled by 255/65535; 32-bit integer (``I``) as 16-bit when its
    samples fit 0-65535 (how Pillow holds 16-bit PNG/TIFF), else by its own range; 32-bit
    float (``F``) as 0-1 when its samples fit there, else by its own range.
    """
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        a = np.asarray(im)
        if mode.startswith("I;16"):
            full = 65535.0
        elif mode == "I":
            full = 65535.0 if a.size and a.min() >= 0 and a.max() <= 65535 else None
        else:
            finite = a[np.isfinite(a)]
            full = 1.0 if finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1) else None
        return Image.fromarray(_scaled(a, full))  # 2-D uint8: mode L
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    if mode in ("La",):
        return im.convert("LA")
    if mode in ("RGBa",):
        return im.convert("RGBA")
    return im.convert("RGB")  # CMYK (Adobe inverted too), YCbCr, LAB, HSV, RGBX, ...


def flatten_on_white(pixels: np.ndarray) -> np.ndarray:
    """HxWx2 (LA) or HxWx4 (RGBA) uint8 -> HxW or HxWx3 over a white page, with
    img2dataset's arithmetic (so the download path matches its own alpha matting)."""
    alpha = pixels[..., -1:].astype(np.float64)
    out = alpha / 255 * pixels[..., :-1] + 255 - alpha
    out = np.rint(out.clip(min=0, max=255)).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def display_pixels(im: Image.Image, apply_orientation: bool = True) -> np.ndarray:
    """What a viewer shows for a loaded image: upright, 8-bit, grey (HxW) or RGB (HxWx3),
    transparency over white, the first frame of an animation. ``apply_orientation=False``
    keeps the stored frame (for boxes given relative to it)."""
    im = to_srgb(im)
    im = to_8bit(upright(im) if apply_orientation else im)
    a = np.asarray(im)
    return flatten_on_white(a) if im.mode in ("LA", "RGBA") else a


def viewer_rgb(im: Image.Image) -> Image.Image:
    """An RGB image as a viewer would orient, colour-manage and scale it, for models (embed).
    Transparency is dropped as PIL's ``convert("RGB")`` drops it, which is what open_clip's
    loaders do."""
    im = to_8bit(upright(to_srgb(im)))
    return im if im.mode == "RGB" else im.convert("RGB")
