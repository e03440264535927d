"""img2dataset's downloader and resizer with curate's safety policy and image checks.

``SafeDownloader`` is img2dataset's per-shard ``Downloader``; around each shard it installs
the policy's urllib opener (curate.download.safety) in the worker process, so every fetch
img2dataset makes, redirects included, goes through the address check. ``SafeResizer``
looks at the image header before img2dataset's OpenCV decode, so a decompression bomb is
refused without being decoded, and a truncated file or a non-image is named as such.
"""

from __future__ import annotations

import os
import re
import urllib.request

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations; no network calls

from img2dataset.downloader import Downloader  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402

from curate.download.safety import FetchPolicy, build_opener  # noqa: E402

# Pillow's own decompression-bomb threshold (about 89.5 megapixels).
DEFAULT_MAX_IMAGE_AREA = 89_478_485


class SafeResizer(Resizer):
    """img2dataset's Resizer after a Pillow header check and a full decode check."""

    def __call__(self, img_stream, blurring_bbox_list=None):
        from PIL import Image

        img_stream.seek(0)
        head = img_stream.read(16)
        img_stream.seek(0)
        try:
            with Image.open(img_stream) as im:
                w, h = im.size
                if w * h > self.max_image_area:
                    return None, None, None, None, None, f"image area too large ({w}x{h} pixels, limit {self.max_image_area:.0f})"
                im.load()  # catches truncated and corrupt files OpenCV would half-decode
        except Image.DecompressionBombError as e:
            return None, None, None, None, None, f"image area too large ({e})"
        except Image.UnidentifiedImageError:
            return None, None, None, None, None, f"not an image (content starts with {head!r})"
        except (OSError, ValueError, SyntaxError) as e:
            return None, None, None, None, None, f"decode error: {e}"
        img_stream.seek(0)
        return super().__call__(img_stream, blurring_bbox_list)


class SafeDownloader(Downloader):
    """img2dataset's Downloader whose fetches go through ``policy``'s opener."""

    def __init__(self, *args, policy: FetchPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = policy

    def __call__(self, row):
        previous = urllib.request._opener  # restore afterwards: Spark reuses this worker process
        urllib.request.install_opener(build_opener(self.policy))
        try:
            return super().__call__(row)
        finally:
            urllib.request._opener = previous


# (pattern over the downloader's error text, error class), first match wins
_ERROR_CLASSES = [
    (r"blocked address", "blocked_address"),
    (r"robots opt-out|disallowed by X-Robots-Tag", "robots_optout"),
    (r"HTTP Error 404", "http_404"),
    (r"HTTP Error \d+", "http_error"),
    (r"timed out|timeout", "timeout"),
    (r"image area too large|too large: body", "too_large"),
    (r"image too small", "too_small"),
    (r"aspect ratio too large", "bad_aspect_ratio"),
    (r"not an image", "not_an_image"),
    (r"decode error|decoding error|truncated|cannot identify", "decode_error"),
    (r"unknown url type|no host given|unsupported", "unsupported_url"),
    (r"hash mismatch", "hash_mismatch"),
    (r"urlopen error|Connection|Errno|cannot resolve|cannot connect|RemoteDisconnected|IncompleteRead", "connection_error"),
]


def classify_error(message: str | None) -> str | None:
    """The downloads table's ``error_class`` for one of img2dataset's error texts."""
    if message is None:
        return None
    for pattern, cls in _ERROR_CLASSES:
        if re.search(pattern, message, re.IGNORECASE):
            return cls
    return "other"
