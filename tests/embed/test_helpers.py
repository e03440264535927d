"""embed_images / embed_texts / embed_image_folder against direct open_clip calls."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from curate.embed import ImageDecodeError, embed_image_folder, embed_images, embed_texts
from curate.models import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("curate-tiny", seed=0)


def _direct_images(bundle, pil_images):
    x = torch.stack([bundle.preprocess(im.convert("RGB")) for im in pil_images])
    with torch.no_grad():
        return torch.nn.functional.normalize(bundle.model.encode_image(x), dim=-1).numpy()


def test_images_from_paths_bytes_and_pil_match_open_clip(tiny, shared_data):
    paths = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:7]
    pil = [Image.open(p) for p in paths]
    direct = _direct_images(tiny, pil)
    for inputs in ([str(p) for p in paths], [p.read_bytes() for p in paths], pil):
        got = embed_images(tiny, inputs, batch_size=3, threads=2)
        assert got.dtype == np.float32 and got.shape == (7, 64)
        np.testing.assert_allclose(got, direct, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_texts_match_open_clip(tiny):
    texts = ["a dog runs on grass", "", "two children play football in the park"] * 3
    got = embed_texts(tiny, texts, batch_size=4)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(tiny.model.encode_text(tiny.tokenizer(texts)), dim=-1).numpy()
    np.testing.assert_allclose(got, direct, atol=1e-5)
    assert got.shape == (9, 64)


def test_undecodable_image_names_the_input(tiny):
    good = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good, format="JPEG")
    with pytest.raises(ImageDecodeError, match="decode_error"):
        embed_images(tiny, [good.getvalue(), b"<html>not an image</html>"])
    assert embed_images(tiny, [good.getvalue()]).shape == (1, 64)


def test_labelled_folder(tiny, shared_data, tmp_path):
    # a small copy of cifar10_test's layout: <class>/<n>.jpg
    src = shared_data / "cifar10_test"
    for cls in ("cat", "ship"):
        (tmp_path / cls).mkdir()
        for p in sorted((src / cls).glob("*.jpg"))[:4]:
            (tmp_path / cls / p.name).write_bytes(p.read_bytes())
    paths, labels, emb = embed_image_folder(tmp_path, tiny, batch_size=3)
    assert labels == ["cat"] * 4 + ["ship"] * 4
    assert [p.split("/")[-2] for p in paths] == labels
    np.testing.assert_allclose(emb, _direct_images(tiny, [Image.open(p) for p in paths]), atol=1e-5)


def test_uint8_pipeline_equals_open_clip_preprocess(tiny, shared_data):
    """The GPU path's split transform (uint8 to the device, normalise there) runs on CPU too."""
    from curate.embed import open_image
    from curate.embed.core import ImagePipeline

    paths = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:5]
    pipe = ImagePipeline(tiny, uint8=True)
    assert pipe.uint8
    prepared = [pipe.prepare(open_image(p)) for p in paths]
    assert prepared[0].dtype == torch.uint8 and prepared[0].shape == (32, 32, 3)
    fast = pipe.batch(prepared)
    ref = torch.stack([tiny.preprocess(open_image(p)) for p in paths])
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    assert not ImagePipeline(tiny).uint8  # CPU default: the whole transform in the threads
