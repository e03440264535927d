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
    # the message names no memory address (PIL's repr of the buffer): failure tables rerun byte-identical
    from curate.embed.core import open_image

    with pytest.raises(ImageDecodeError) as e:
        open_image(b"<html>not an image</html>")
    assert e.value.message == "cannot identify image file"


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


def test_fast_decode_scales_jpegs_but_never_below_the_model_input(tiny, shared_data):
    from curate.embed import open_image
    from curate.embed.core import ImagePipeline

    photo = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[0]
    big = Image.open(photo).convert("RGB").resize((512, 384))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    assert open_image(data).size == (512, 384)
    assert open_image(data, min_side=100).size == (256, 192)  # 1/2: 1/4 would give 96 < 100
    assert open_image(data, min_side=32).size == (64, 48)  # 1/8
    assert open_image(data, min_side=300).size == (512, 384)  # no reduction possible
    png = io.BytesIO()
    big.save(png, format="PNG")
    assert open_image(png.getvalue(), min_side=32).size == (512, 384)  # only JPEGs
    fast, plain = ImagePipeline(tiny, fast_decode=True), ImagePipeline(tiny)
    a = embed_images(tiny, [data])
    x_fast = fast.batch([fast.prepare(fast.open(data))])
    x_plain = plain.batch([plain.prepare(plain.open(data))])
    assert x_fast.shape == x_plain.shape == (1, 3, 32, 32)
    assert (x_fast - x_plain).abs().mean() < 0.1  # same picture, slightly different pixels
    assert a.shape == (1, 64)
