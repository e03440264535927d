"""curate.imaging: the pixels a viewer shows, for the modes Pillow decodes web images into."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curate.imaging import display_pixels, sniff_image_format, to_8bit


@pytest.mark.parametrize("mode, values, shown", [
    ("I;16", [0, 21845, 43690, 65535], [0, 85, 170, 255]),
    ("I;16B", [0, 257, 32896, 65535], [0, 1, 128, 255]),
    ("I", [0, 21845, 43690, 65535], [0, 85, 170, 255]),  # 16-bit data in a 32-bit container
    ("I", [-1000, 0, 1000, 3000], [0, 64, 128, 255]),  # no known full scale: the image's own range
    ("I", [0, 100000, 200000, 400000], [0, 64, 128, 255]),
    ("F", [0.0, 1 / 3, 2 / 3, 1.0], [0, 85, 170, 255]),
    ("F", [-1.0, 0.0, 1.0, 3.0], [0, 64, 128, 255]),
    ("F", [float("nan"), 0.0, 0.5, 1.0], [0, 0, 128, 255]),  # NaN shows as black
    ("F", [7.0, 7.0, 7.0, 7.0], [0, 0, 0, 0]),  # a flat image outside 0-1
])
def test_high_bit_depth_is_scaled_not_clipped(mode, values, shown):
    if mode == "F":
        im = Image.fromarray(np.array([values], np.float32))
    elif mode == "I":
        im = Image.fromarray(np.array([values], np.int32))
    else:
        dtype = "<u2" if mode == "I;16" else ">u2"
        im = Image.frombytes(mode, (4, 1), np.array(values, dtype).tobytes())
    out = to_8bit(im)
    assert out.mode == "L"
    assert np.asarray(out)[0].tolist() == shown


@pytest.mark.parametrize("mode, fill, shown", [
    ("1", 1, 255), ("L", 7, 7), ("P", 1, (255, 0, 0)), ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("LA", (100, 0), 255), ("LA", (100, 255), 100), ("RGBA", (0, 0, 255, 0), (255, 255, 255)),
    ("RGBA", (0, 0, 255, 255), (0, 0, 255)), ("YCbCr", (76, 85, 255), (254, 0, 0)),
])
def test_display_pixels_are_grey_or_rgb_over_white(mode, fill, shown):
    im = Image.new(mode, (4, 2), fill)
    if mode == "P":
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    px = display_pixels(im)
    assert px.dtype == np.uint8 and px.shape[:2] == (2, 4)
    got = px[0, 0].tolist() if px.ndim == 3 else int(px[0, 0])
    if isinstance(shown, tuple):
        assert max(abs(a - b) for a, b in zip(got, shown)) <= 1, got
    else:
        assert got == shown


@pytest.mark.parametrize("head, name", [
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"), (b"\x00\x00\x00\x18ftypmif1", "HEIF"),
    (b"\x00\x00\x00\x1cftypavif", "AVIF"), (b"\xff\x0a\xfa", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"), (b"v/1\x01\x02", "OpenEXR"), (b"#?RADIANCE\n", "Radiance HDR"),
    (b"\xef\xbb\xbf <svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    (b"<?xml version='1.0'?><!DOCTYPE svg><svg/>", "SVG"),
    (b"<!DOCTYPE html><html><body><svg/></body></html>", None), (b"<html><svg></svg></html>", None),
    (b"hello", None), (b"", None), (b"\xff\xd8\xff\xe0garbage", None),
])
def test_formats_nothing_decodes_are_named(head, name):
    assert sniff_image_format(head) == name


def test_a_broken_or_srgb_colour_profile_is_left_alone():
    from PIL import ImageCms

    from curate.imaging import icc_needs_conversion, to_srgb

    im = Image.new("RGB", (2, 2), (200, 60, 60))
    im.info["icc_profile"] = b"not a profile"
    assert not icc_needs_conversion(im) and to_srgb(im) is im
    im.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert not icc_needs_conversion(im) and to_srgb(im) is im
    grey = Image.new("L", (2, 2), 7)
    grey.info["icc_profile"] = b"a grey profile"
    assert to_srgb(grey) is grey
