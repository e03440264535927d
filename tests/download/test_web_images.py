"""Web images as they come (issue 15, items 20-24): generated in the test, served from
127.0.0.1 with the server behaviours of the real web, downloaded with the real downloader.
Each success case says what a viewer shows (built independently of the code under test)
and the stored image must show that; each failure case names its error class."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset

from .conftest import RouteServer, samples_table

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 220, 0)


def quadrants(w: int, h: int) -> Image.Image:
    """An upright scene: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    im = Image.new("RGB", (w, h))
    for (x, y), c in {(0, 0): RED, (1, 0): GREEN, (0, 1): BLUE, (1, 1): YELLOW}.items():
        im.paste(c, (x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2))
    return im


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


# How a viewer turns stored pixels into the displayed ones, per EXIF orientation (EXIF 2.3,
# tag 0x0112); the stored pixels are the displayed scene put through the inverse.
_STORED_FROM_DISPLAY = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
}


def with_orientation(scene: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    op = _STORED_FROM_DISPLAY[orientation]
    stored = scene.transpose(op) if op is not None else scene
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    return encode(stored, fmt, exif=exif.tobytes(), **kw)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(a: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (grey 0, RGB 2, grey+alpha 4, RGBA 6) written by hand: Pillow cannot."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


LEVELS = [0, 85, 170, 255]  # grey bands of the high-bit-depth cases, as a viewer shows them


def bands16(channels: int, alpha: bool = False) -> np.ndarray:
    row = np.repeat(np.array(LEVELS, np.uint16) * 257, 16)  # 0, 21845, 43690, 65535
    a = np.tile(row, (16, 1))
    if channels == 1 and not alpha:
        return a
    planes = [a] * channels + ([np.full_like(a, 65535)] if alpha else [])
    return np.stack(planes, -1)


def bands_scene() -> Image.Image:
    return Image.fromarray(np.tile(np.repeat(np.array(LEVELS, np.uint8), 16), (16, 1)))


def animated(fmt: str) -> bytes:
    first, second = quadrants(64, 32), Image.new("RGB", (64, 32), (40, 40, 40))
    kw = {"lossless": True} if fmt == "WEBP" else {}
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0, **kw)


def palette_with_transparency() -> tuple[bytes, Image.Image]:
    im = Image.new("P", (64, 32), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (32, 0, 64, 32))
    shown = Image.new("RGB", (64, 32), (255, 255, 255))
    shown.paste(RED, (32, 0, 64, 32))
    return encode(im, "PNG", transparency=0), shown


def grey_alpha() -> tuple[bytes, Image.Image]:
    a = np.zeros((32, 64, 2), np.uint8)
    a[..., 0] = 100
    a[:, 32:, 1] = 255  # left half fully transparent, right half opaque grey 100
    shown = Image.new("L", (64, 32), 255)
    shown.paste(100, (32, 0, 64, 32))
    return encode(Image.fromarray(a), "PNG"), shown


def one_bit() -> tuple[bytes, Image.Image]:
    im = Image.new("1", (64, 32), 0)
    im.paste(1, (32, 0, 64, 32))
    return encode(im, "PNG"), im.convert("L")


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n%%EndComments\n"
       b"newpath 0 0 moveto 32 0 lineto 32 32 lineto closepath fill\n%%EOF\n")
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="32"><rect width="64" height="32" fill="red"/></svg>'
HEIC_HEAD = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64
JXL = b"\xff\x0a" + bytes(range(64))


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))  # ICC s15Fixed16Number


def adobe_rgb_icc() -> bytes:
    """A minimal ICC v2 display profile with Adobe RGB (1998) primaries (D50-adapted) and gamma 2.2."""
    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)

    text = b"Adobe RGB (1998) test profile\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 4 + b"\0" * 4 + b"\0" * 2 + b"\0" + b"\0" * 67
    curv = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 563) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.6097, 0.3111, 0.0195)),
            (b"gXYZ", xyz(0.2053, 0.6257, 0.0609)), (b"bXYZ", xyz(0.1492, 0.0632, 0.7446)),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + data


def colour_managed() -> tuple[Image.Image, Image.Image]:
    """(pixels in Adobe RGB, what a colour-managed viewer shows in sRGB: LittleCMS's answer)."""
    from PIL import ImageCms

    raw = Image.new("RGB", (96, 48))
    for (x, y), c in {(0, 0): (200, 60, 60), (1, 0): (90, 160, 90), (0, 1): (60, 60, 200), (1, 1): (160, 160, 160)}.items():
        raw.paste(c, (x * 48, y * 24, (x + 1) * 48, (y + 1) * 24))
    shown = ImageCms.profileToProfile(raw, ImageCms.ImageCmsProfile(io.BytesIO(adobe_rgb_icc())),
                                      ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert np.abs(np.asarray(shown, np.int32) - np.asarray(raw, np.int32)).max() > 50  # a visible difference
    return raw, shown


# ---------------------------------------------------------------- cases
@dataclass
class Case:
    route: object  # bytes to serve as image/jpeg, or fn(handler)
    error_class: str | None = None  # None: success
    shown: Image.Image | None = None  # what a viewer shows (success cases)
    tolerance: int = 12  # per channel, at the centre of flat regions (lossy formats)
    size: tuple[int, int] | None = None  # stored size when a resize applies
    original: tuple[int, int] | None = None  # original_width/height, when not the shown size
    stored_bytes: bytes | None = None  # the stored member must be exactly these bytes
    path: str | None = None  # the request path as the server receives it (default: /<name>)


def serve(body: bytes, ctype: str | None = "image/jpeg", headers=(), length: int | None = None, chunked=False,
          close_after: int | None = None):
    def route(h):
        h.send_response(200)
        if ctype:
            h.send_header("Content-Type", ctype)
        for k, v in headers:
            h.send_header(k, v)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            end = len(body) if close_after is None else close_after
            for i in range(0, end, 500):
                piece = body[i:min(i + 500, end)]
                h.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            if close_after is None:
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
            return
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body[:close_after] if close_after is not None else body)
        h.wfile.flush()

    return route


def _cases() -> dict[str, Case]:
    scene = quadrants(96, 48)
    square = quadrants(64, 64)
    photo = encode(quadrants(96, 48), "JPEG", quality=95)
    png = encode(scene, "PNG")
    c: dict[str, Case] = {}
    # item 20: every EXIF orientation, in JPEG, PNG (eXIf) and WebP, and with a resize
    for o in range(1, 9):
        c[f"exif{o}.jpg"] = Case(with_orientation(scene, o), shown=scene)
    c["exif6.png"] = Case(with_orientation(scene, 6, "PNG"), shown=scene)
    c["exif8.webp"] = Case(with_orientation(scene, 8, "WEBP"), shown=scene)
    big = quadrants(1200, 600)
    c["exif6-big.jpg"] = Case(with_orientation(big, 6), shown=big.resize((512, 256)), size=(512, 256),
                              original=(1200, 600))
    # item 21: high bit depth
    shown_bands = bands_scene()
    c["grey16.png"] = Case(png16(bands16(1), 0), shown=shown_bands, tolerance=3)
    c["rgb16.png"] = Case(png16(bands16(3), 2), shown=shown_bands, tolerance=3)
    c["rgba16.png"] = Case(png16(bands16(3, alpha=True), 6), shown=shown_bands, tolerance=3)
    c["greyalpha16.png"] = Case(png16(bands16(1, alpha=True), 4), shown=shown_bands, tolerance=3)
    c["grey16.tif"] = Case(encode(Image.fromarray(bands16(1)), "TIFF"), shown=shown_bands, tolerance=3)
    c["grey16be.tif"] = Case(encode(Image.frombytes("I;16B", (64, 16), bands16(1).astype(">u2").tobytes()), "TIFF"),
                             shown=shown_bands, tolerance=3)
    c["int32.tif"] = Case(encode(Image.fromarray(bands16(1).astype(np.int32)), "TIFF"), shown=shown_bands, tolerance=3)
    c["float.tif"] = Case(encode(Image.fromarray((bands16(1) / 65535).astype(np.float32)), "TIFF"),
                          shown=shown_bands, tolerance=3)
    # item 24: formats OpenCV cannot read, through Pillow; and colour models a viewer converts
    for fmt, ext in (("ICO", "ico"), ("TGA", "tga"), ("PCX", "pcx"), ("SGI", "sgi"), ("DDS", "dds"),
                     ("QOI", "qoi"), ("BMP", "bmp"), ("TIFF", "tif"), ("JPEG2000", "jp2"),
                     ("AVIF", "avif"), ("PPM", "ppm"), ("GIF", "gif")):
        c[f"square.{ext}"] = Case(encode(square, fmt), shown=square, tolerance=30 if fmt == "AVIF" else 12)
    raw, shown = colour_managed()
    c["adobe-rgb.jpg"] = Case(encode(raw, "JPEG", quality=95, icc_profile=adobe_rgb_icc()), shown=shown)
    c["adobe-rgb.png"] = Case(encode(raw, "PNG", icc_profile=adobe_rgb_icc()), shown=shown, tolerance=3)
    from PIL import ImageCms

    srgb_tagged = encode(scene, "JPEG", quality=95,
                         icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    c["srgb-profile.jpg"] = Case(srgb_tagged, shown=scene, stored_bytes=srgb_tagged)  # nothing to convert: kept
    c["cmyk.jpg"] = Case(encode(scene.convert("CMYK"), "JPEG", quality=95), shown=scene)
    c["animated.gif"] = Case(animated("GIF"), shown=quadrants(64, 32))
    c["animated.webp"] = Case(animated("WEBP"), shown=quadrants(64, 32))
    c["animated.png"] = Case(animated("PNG"), shown=quadrants(64, 32))
    body, shown = palette_with_transparency()
    c["palette-trns.png"] = Case(body, shown=shown)
    body, shown = grey_alpha()
    c["grey-alpha.png"] = Case(body, shown=shown)
    body, shown = one_bit()
    c["one-bit.png"] = Case(body, shown=shown)
    c["grey.jpg"] = Case(encode(bands_scene(), "JPEG", quality=95), shown=bands_scene(), stored_bytes=None)
    c["plain.jpg"] = Case(photo, shown=scene, stored_bytes=photo)  # unchanged path: bytes kept
    mpo = encode(scene, "MPO", save_all=True, append_images=[quadrants(96, 48)], quality=95)
    c["camera.mpo.jpg"] = Case(mpo, shown=scene, stored_bytes=mpo)  # a JPEG with extra pictures: kept too
    exif = Image.Exif()
    exif[0x0112] = 6
    c["camera6.mpo.jpg"] = Case(encode(scene.transpose(Image.Transpose.ROTATE_90), "MPO", save_all=True,
                                       append_images=[scene], quality=95, exif=exif.tobytes()), shown=scene)
    c["eps.eps"] = Case(EPS, "unsupported_format")
    c["vector.svg"] = Case(serve(SVG, "image/svg+xml"), "unsupported_format")
    c["photo.jxl"] = Case(serve(JXL, "image/jxl"), "unsupported_format")
    try:
        import pillow_heif  # noqa: F401 - with a HEIC decoder these bytes are a corrupt HEIC instead
    except ImportError:
        c["photo.heic"] = Case(serve(HEIC_HEAD, "image/heic"), "unsupported_format")
    # item 22: content encodings, transfer codings, and what servers get wrong
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    c["gzip.jpg"] = Case(serve(gzip.compress(photo), headers=[("Content-Encoding", "gzip")]), shown=scene,
                         stored_bytes=photo)
    c["deflate.jpg"] = Case(serve(zlib.compress(photo), headers=[("Content-Encoding", "deflate")]), shown=scene,
                            stored_bytes=photo)
    c["raw-deflate.jpg"] = Case(serve(raw.compress(photo) + raw.flush(), headers=[("Content-Encoding", "deflate")]),
                                shown=scene, stored_bytes=photo)
    c["gzip-chunked.png"] = Case(serve(gzip.compress(png), "image/png", [("Content-Encoding", "gzip")], chunked=True),
                                 shown=scene)
    c["chunked.jpg"] = Case(serve(photo, chunked=True), shown=scene, stored_bytes=photo)
    c["as-html.png"] = Case(serve(png, "text/html"), shown=scene)
    c["octet-stream.jpg"] = Case(serve(photo, "application/octet-stream"), shown=scene, stored_bytes=photo)
    c["no-type.jpg"] = Case(serve(photo, None), shown=scene, stored_bytes=photo)
    c["gzip-corrupt.jpg"] = Case(serve(gzip.compress(photo)[:-40] + b"\0" * 40, headers=[("Content-Encoding", "gzip")]),
                                 "decode_error")
    c["compress.jpg"] = Case(serve(photo, headers=[("Content-Encoding", "compress")]), "unsupported_format")
    c["gzip-bomb.jpg"] = Case(serve(gzip.compress(b"\0" * (6 << 20)), headers=[("Content-Encoding", "gzip")]),
                              "too_large")
    c["short-body.jpg"] = Case(serve(photo, length=len(photo) + 5000), "connection_error")
    c["cut-off.jpg"] = Case(serve(photo, close_after=len(photo) // 2, length=len(photo)), "connection_error")
    c["chunked-cut-off.jpg"] = Case(serve(photo, chunked=True, close_after=len(photo) // 2), "connection_error")
    c["empty.jpg"] = Case(serve(b""), "not_an_image")
    c["huge-declared.jpg"] = Case(serve(photo, length=10**12), "too_large")
    # item 23: a URL as users paste it
    c["dir one/café 图.jpg"] = Case(photo, shown=scene, stored_bytes=photo,
                                   path="/dir%20one/caf%C3%A9%20%E5%9B%BE.jpg")
    # item 10: X-Robots-Tag grammar, end to end
    c["robots-star.jpg"] = Case(serve(photo, headers=[("X-Robots-Tag", "*: noai")]), "robots_optout")
    c["robots-spaces.jpg"] = Case(serve(photo, headers=[("X-Robots-Tag", "noindex noai")]), "robots_optout")
    c["robots-two-headers.jpg"] = Case(serve(photo, headers=[("X-Robots-Tag", "googlebot: noindex"),
                                                             ("X-Robots-Tag", "CURATE: NoImageAI")]), "robots_optout")
    c["robots-other-bot.jpg"] = Case(serve(photo, headers=[("X-Robots-Tag", "googlebot: noai noimageai")]),
                                     shown=scene, stored_bytes=photo)
    return c


CASES = _cases()


def _route(case: Case):
    return case.route if callable(case.route) else serve(case.route)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    from urllib.parse import quote

    routes = {(case.path or "/" + quote(name)): _route(case) for name, case in CASES.items()}
    with RouteServer(routes) as server:
        rows = [(f"{server.base}/{name}", f"caption of {name}") for name in CASES]
        ds = Dataset(tmp_path_factory.mktemp("web-images") / "ds")
        ds.write_table("samples", samples_table(rows), schema="samples")
        policy = FetchPolicy(allow_networks=[f"127.0.0.1:{server.port}"], max_seconds=10, max_bytes=4 << 20)
        stats = run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=200, thread_count=8, timeout=5,
                                                                  policy=policy))
        requests = list(server.requests)
    table = ds.read("downloads", schema="downloads").to_pylist()
    by_uid = {r["uid"]: r for r in table}
    uids = samples_table(rows).column("uid").to_pylist()
    members = {}
    for r in table:
        if r["shard"] and r["shard"] not in members:
            with tarfile.open(ds.root / r["shard"]) as tf:
                members[r["shard"]] = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    return stats, {name: by_uid[u] for name, u in zip(CASES, uids)}, members, requests


def _sample_points(w: int, h: int, bands: bool = False):
    """Centres of the four quadrants, or of the four vertical bands: inside flat regions."""
    if bands:
        return [((2 * i + 1) * w // 8, h // 2) for i in range(4)]
    return [(w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)]


@pytest.mark.parametrize("name", list(CASES))
def test_each_web_image_is_stored_as_a_viewer_shows_it_or_fails_with_its_class(downloaded, name):
    stats, rows, members, _ = downloaded
    case, row = CASES[name], rows[name]
    assert stats["success"] + stats["failed"] == stats["samples"] == len(CASES)
    if case.error_class is not None:
        assert (row["status"], row["error_class"]) == ("failed", case.error_class), row["error_message"]
        return
    assert row["status"] == "success", row["error_message"]
    stored = members[row["shard"]][f"{row['key']}.jpg"]
    if case.stored_bytes is not None:
        assert stored == case.stored_bytes
        assert row["sha256"] == hashlib.sha256(case.stored_bytes).hexdigest()  # of the decoded body
    im = Image.open(io.BytesIO(stored))
    assert im.getexif().get(0x0112, 1) == 1  # nothing left for a viewer to rotate
    assert im.mode in ("RGB", "L")  # no CMYK, palette or 16-bit left for a consumer to get wrong
    shown = case.shown
    size = case.size or shown.size
    assert im.size == size == (row["width"], row["height"])
    assert (row["original_width"], row["original_height"]) == (case.original or shown.size)
    got = im.convert(shown.mode)
    for x, y in _sample_points(*size, bands=shown.size == (64, 16)):
        want = np.array(shown.getpixel((x * shown.width // size[0], y * shown.height // size[1])), np.int32)
        have = np.array(got.getpixel((x, y)), np.int32)
        assert np.abs(want - have).max() <= case.tolerance, (name, (x, y), want.tolist(), have.tolist())


def test_requests_ask_for_the_encodings_we_decode_and_paths_are_percent_encoded(downloaded):
    _, rows, _, requests = downloaded
    paths = [p for p, _ in requests]
    assert "/dir%20one/caf%C3%A9%20%E5%9B%BE.jpg" in paths
    assert all(p.isascii() and " " not in p for p in paths)
    for _, headers in requests:
        codings = {c.strip() for c in headers.get("Accept-Encoding", "").split(",")}
        assert {"gzip", "deflate"} <= codings, headers
        assert headers["User-Agent"].startswith("curate/")


def test_error_messages_say_what_happened(downloaded):
    _, rows, _, _ = downloaded
    assert "unsupported image format SVG" in rows["vector.svg"]["error_message"]
    assert "unsupported image format EPS" in rows["eps.eps"]["error_message"]
    assert "body shorter than its Content-Length" in rows["short-body.jpg"]["error_message"]
    assert "Content-Length 1000000000000" in rows["huge-declared.jpg"]["error_message"]
    assert "empty body" in rows["empty.jpg"]["error_message"]
    assert "unsupported content encoding 'compress'" in rows["compress.jpg"]["error_message"]


def test_embed_decodes_what_a_viewer_shows():
    """curate.embed's decoder applies the EXIF orientation and the colour profile, and scales
    16-bit and float samples."""
    from curate.embed.core import open_image

    scene = quadrants(96, 48)
    for o in range(1, 9):
        im = open_image(with_orientation(scene, o))
        assert im.mode == "RGB" and im.size == (96, 48)
        for x, y in _sample_points(96, 48):
            assert np.abs(np.array(im.getpixel((x, y)), np.int32) - scene.getpixel((x, y))).max() <= 12, (o, x, y)
    raw, shown = colour_managed()
    im = open_image(encode(raw, "PNG", icc_profile=adobe_rgb_icc()))
    assert np.abs(np.asarray(im, np.int32) - np.asarray(shown, np.int32)).max() <= 1
    for body in (png16(bands16(1), 0), encode(Image.fromarray((bands16(1) / 65535).astype(np.float32)), "TIFF"),
                 encode(Image.fromarray(bands16(1)), "TIFF")):
        im = open_image(body)
        assert [im.getpixel(((2 * i + 1) * 8, 8)) for i in range(4)] == [(v, v, v) for v in LEVELS]


def test_embed_tensor_decode_path_turns_rotated_photos_upright():
    """nvJPEG ignores EXIF orientation and colour profiles, so such JPEGs take the PIL path;
    every orientation ends as the upright scene's pixels."""
    import torch

    from curate.embed.core import TensorJpegPipeline, open_image
    from curate.models import load_model

    pipe = TensorJpegPipeline(load_model("curate-tiny", seed=0))
    assert pipe.usable
    scene = quadrants(96, 48)
    datas = [with_orientation(scene, o) for o in range(1, 9)]
    prepared = [pipe.prepare(d) for d in datas]
    assert prepared[0].dtype == torch.uint8 and all(p.dtype != torch.uint8 for p in prepared[1:])
    out, errors = pipe.batch(prepared, datas, [f"orientation {o}" for o in range(1, 9)])
    assert errors == [None] * 8
    raw, shown = colour_managed()  # a colour profile takes the PIL path too, and is applied
    tagged = encode(raw, "JPEG", quality=95, icc_profile=adobe_rgb_icc())
    assert pipe.prepare(tagged).dtype != torch.uint8
    managed = pipe.batch([pipe.prepare(tagged)], [tagged], ["adobe rgb"])[0][0]
    unmanaged = pipe.fallback.prepare(raw)
    want = pipe.fallback.prepare(shown)
    assert (managed - want).abs().mean() < 0.25 * (unmanaged - want).abs().mean()
    want = pipe.fallback.prepare(open_image(encode(scene, "JPEG", quality=95)))
    for o, got in enumerate(out, 1):
        assert got.shape == want.shape
        assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.98, o


def test_images_with_datacomp_face_boxes_keep_the_frame_the_boxes_refer_to(tmp_path):
    """DataComp's face_bboxes are relative to the pixels its download stored, which never
    applied EXIF orientation: a rotated photo that has boxes stays in that frame (so the
    resharder's --apply-blur covers the faces), one without boxes is turned upright."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scene = quadrants(96, 48)
    rotated_jpeg = with_orientation(scene, 6)
    rotated_png = with_orientation(scene, 6, "PNG")  # the Pillow path
    stored_frame = scene.transpose(Image.Transpose.ROTATE_90)  # 48x96, as DataComp stored it
    names = {"faces.jpg": (rotated_jpeg, [[0.1, 0.1, 0.4, 0.4]], stored_frame),
             "faces.png": (rotated_png, [[0.5, 0.5, 0.9, 0.9]], stored_frame),
             "no-faces.jpg": (rotated_jpeg, [], scene), "no-boxes.png": (rotated_png, None, scene)}
    with RouteServer({f"/{n}": serve(body) for n, (body, _, _) in names.items()}) as server:
        rows = [(f"{server.base}/{n}", f"caption {n}") for n in names]
        samples = samples_table(rows).append_column(
            "face_bboxes", pa.array([b for _, b, _ in names.values()], pa.list_(pa.list_(pa.float64()))))
        ds = Dataset(tmp_path / "ds")
        (ds.root / "samples").mkdir(parents=True)
        pq.write_table(samples, ds.root / "samples" / "part-00000.parquet")
        stats = run_download(ds, LocalExecutor(), DownloadOptions(
            samples_per_shard=10, thread_count=4, timeout=5,
            policy=FetchPolicy(allow_networks=[f"127.0.0.1:{server.port}"], max_seconds=10)))
    assert stats["success"] == 4
    rows_by_uid = {r["uid"]: r for r in ds.read("downloads").to_pylist()}
    for uid, (name, (_, _, frame)) in zip(samples["uid"].to_pylist(), names.items()):
        r = rows_by_uid[uid]
        with tarfile.open(ds.root / r["shard"]) as tf:
            im = Image.open(io.BytesIO(tf.extractfile(f"{r['key']}.jpg").read()))
            im.load()
        assert im.size == frame.size == (r["width"], r["height"]), name
        for x, y in _sample_points(*frame.size):
            diff = np.abs(np.array(im.convert("RGB").getpixel((x, y)), np.int32) - frame.getpixel((x, y))).max()
            assert diff <= 12, (name, x, y)
