"""Training shards: 48 solid-colour squares with their colour as caption, in two WebDataset tars."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def jpeg_square(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), rgb).save(buf, format="JPEG")
    return buf.getvalue()


def write_colour_shards(d: Path) -> Path:
    """Two WebDataset tars of 24 solid-colour squares each, and their sizes.json, in ``d``."""
    import webdataset as wds

    d.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    sizes = {}
    for s in range(2):
        with wds.TarWriter(str(d / f"{s:08d}.tar"), encoder=False) as w:
            for i in range(24):
                c = names[(s * 24 + i) % 4]
                w.write({"__key__": f"{s}{i:04d}", "jpg": jpeg_square(COLOURS[c]), "txt": f"a {c} square".encode()})
        sizes[f"{s:08d}.tar"] = 24
    (d / "sizes.json").write_text(json.dumps(sizes))
    return d


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_colour_shards(tmp_path_factory.mktemp("wds"))
