"""Embedding helpers over an open_clip :class:`~curate.models.ModelBundle`.

Images are decoded and preprocessed in a thread pool one batch ahead of the model (Pillow's
JPEG decoder and resizer release the GIL), so a GPU does not wait on JPEG decoding. Outputs
are float32, L2-normalised, one row per input, in input order.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from curate.errors import CurateError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


class ImageDecodeError(CurateError):
    """An image could not be decoded; ``error_class`` says how."""

    def __init__(self, where: str, error_class: str, message: str):
        self.where, self.error_class, self.message = where, error_class, message
        super().__init__(f"{where}: {error_class}: {message}")


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def open_image(item: Any, where: str = "", min_side: int | None = None):
    """A fully decoded RGB PIL image from a PIL image, a path or encoded bytes, as a viewer
    shows it: EXIF orientation and a non-sRGB colour profile applied, 16-bit and float
    samples scaled to 8 bits (curate.imaging). Transparency is dropped as open_clip's ``convert("RGB")`` drops it.

    ``min_side``: for JPEGs at least twice that size, let libjpeg decode at 1/2, 1/4 or 1/8
    scale (DCT scaling, several times faster) while keeping the shorter side >= ``min_side``.
    The pixels then differ slightly from a full decode followed by the model's resize.

    Raises ImageDecodeError (``decode_error`` / ``truncated`` / ``too_large``).
    """
    from PIL import Image

    from curate.imaging import viewer_rgb

    if isinstance(item, Image.Image):
        return viewer_rgb(item)
    # an image the download kept (up to its --max-image-area) is embedded without Pillow's
    # warning line per image; past twice Pillow's limit it is too_large below
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    where = where or (str(item) if isinstance(item, (str, os.PathLike)) else "<bytes>")
    try:
        src = io.BytesIO(item) if isinstance(item, (bytes, bytearray, memoryview)) else item
        with Image.open(src) as im:
            if min_side and im.format == "JPEG":
                w, h = im.size
                short = min(w, h)
                if short >= 2 * min_side:
                    im.draft("RGB", (-(-w * min_side // short), -(-h * min_side // short)))
            im.load()
            return viewer_rgb(im)  # upright (EXIF), sRGB, 16-bit and float samples scaled
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(where, "too_large", _stable_message(e)) from e
    except OSError as e:
        cls = "truncated" if "truncated" in str(e).lower() else "decode_error"
        raise ImageDecodeError(where, cls, _stable_message(e)) from e
    except (ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        raise ImageDecodeError(where, "decode_error", _stable_message(e)) from e


_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def _stable_message(e: Exception) -> str:
    """A decoder's message without an object's memory address (PIL names the buffer it read,
    ``<_io.BytesIO object at 0x7f...>``): failure tables stay byte-identical across runs."""
    return _OBJECT_REPR.sub("", str(e)) or type(e).__name__


def prepared_batches(items: Sequence[Any], prepare: Callable[[Any], Any], batch_size: int,
                     threads: int | None = None) -> Iterator[tuple[int, list]]:
    """Yield ``(start, [prepare(item) or exception, ...])`` per batch, preparing the next
    batch in a thread pool while the caller works on the current one."""
    threads = threads or default_threads()

    def safe(item):
        try:
            return prepare(item)
        except Exception as e:  # reported per item, never drops it
            return e

    with ThreadPoolExecutor(max_workers=threads) as pool:
        starts = list(range(0, len(items), batch_size))
        pending = None
        for i, start in enumerate(starts):
            if pending is None:
                pending = [pool.submit(safe, x) for x in items[start:start + batch_size]]
            nxt = None
            if i + 1 < len(starts):
                s2 = starts[i + 1]
                nxt = [pool.submit(safe, x) for x in items[s2:s2 + batch_size]]
            yield start, [f.result() for f in pending]
            pending = nxt


def _to_device(tensor, bundle):
    if bundle.device.startswith("cuda") and tensor.device.type == "cpu":
        return tensor.pin_memory().to(bundle.device, non_blocking=True)
    return tensor.to(bundle.device)


class ImagePipeline:
    """Per-image CPU work (in decode threads) and per-batch finishing (on the model's device).

    With ``uint8`` (default on CUDA), threads stop after open_clip's resize and crop and hand
    over uint8 HWC pixels; the batch crosses to the GPU as uint8 (a quarter of the float32
    bytes) and ToTensor's /255 and Normalize run there, with the same float32 arithmetic
    as torchvision's. Otherwise threads run the whole eval transform.
    """

    def __init__(self, bundle, uint8: bool | None = None, fast_decode: bool = False):
        import torch

        self.bundle = bundle
        # fast_decode: JPEGs decoded at reduced scale, never below the model's input size
        self.min_side = min(bundle.image_size) if fast_decode else None
        if uint8 is None:
            uint8 = bundle.device.startswith("cuda")
        self.head, self.mean, self.std = _split_normalize(bundle.preprocess) if uint8 else (None, None, None)
        self.uint8 = self.head is not None
        if self.uint8:
            dev = bundle.device
            self.mean = torch.tensor(self.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
            self.std = torch.tensor(self.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)

    def open(self, item, where: str = ""):
        """Decode one image (PIL, path or bytes), at reduced scale with fast_decode."""
        return open_image(item, where, min_side=self.min_side)

    def prepare(self, image):
        """PIL image -> tensor ready to stack (uint8 HWC or normalised float CHW)."""
        import numpy as _np
        import torch

        if not self.uint8:
            return self.bundle.preprocess(image)
        im = self.head(image)
        if im.mode != "RGB":
            im = im.convert("RGB")
        return torch.from_numpy(_np.asarray(im, dtype=_np.uint8).copy())

    def batch(self, prepared: list):
        """Stacked batch on the model's device, normalised."""
        import torch

        x = _to_device(torch.stack(prepared), self.bundle)
        if not self.uint8:
            return x
        x = x.permute(0, 3, 1, 2).to(torch.float32).div(255)
        return x.sub_(self.mean).div_(self.std).contiguous()


def _split_normalize(preprocess):
    """(transforms before ToTensor, mean, std) for open_clip's usual eval Compose, else Nones."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-1], T.Normalize) or not isinstance(steps[-2], T.ToTensor):
        return None, None, None
    mean, std = steps[-1].mean, steps[-1].std
    if len(mean) != 3 or len(std) != 3:
        return None, None, None
    return T.Compose(steps[:-2]), tuple(float(m) for m in mean), tuple(float(s) for s in std)


class TensorJpegPipeline:
    """JPEG decode and the eval transform as tensor ops on the model's device.

    On CUDA, ``torchvision.io.decode_jpeg`` decodes a whole batch with nvJPEG and resize,
    crop and normalise run on the GPU, so CPU threads only read bytes; on CPU the same code
    uses libjpeg-turbo. Applies when the eval transform is open_clip's usual
    Resize(shorter side) + CenterCrop + ToTensor + Normalize (``usable``). Items that are not
    JPEG, JPEGs with an EXIF rotation or a non-sRGB colour profile, and files the batch
    decoder rejects go through the PIL path (which names the error).
    Pixels match the PIL path within resampling rounding (torch's and Pillow's bicubic
    antialias filters differ slightly).
    """

    def __init__(self, bundle):
        from torchvision import transforms as T

        self.bundle = bundle
        self.fallback = ImagePipeline(bundle, uint8=False)
        head, mean, std = _split_normalize(bundle.preprocess)
        self.usable = False
        if head is None:
            return
        core = [t for t in head.transforms if type(t).__name__ != "MaybeConvertMode"]
        shorter_side = (len(core) == 2 and isinstance(core[0], T.Resize) and isinstance(core[1], T.CenterCrop)
                        and (isinstance(core[0].size, int)
                             or (isinstance(core[0].size, (list, tuple)) and len(core[0].size) == 1)))
        if shorter_side:
            import torch

            size = core[0].size
            self.resize_size = [size] if isinstance(size, int) else list(size)
            self.interpolation = core[0].interpolation
            self.antialias = core[0].antialias if core[0].antialias is not None else True
            self.crop = list(core[1].size)
            dev = bundle.device
            self.mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(3, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32, device=dev).view(3, 1, 1)
            self.usable = True

    @staticmethod
    def is_jpeg(data) -> bool:
        return isinstance(data, (bytes, bytearray)) and data[:3] == b"\xff\xd8\xff"

    def prepare(self, data, where: str = ""):
        """In a decode thread: raw JPEG bytes as a uint8 tensor, anything else fully on the PIL path."""
        import torch

        from curate.imaging import needs_viewer_decode

        # nvJPEG ignores EXIF orientation (torchvision's apply_exif_orientation is CPU-only) and
        # colour profiles: such photos take the PIL path, which turns them upright and into sRGB
        if self.is_jpeg(data) and not needs_viewer_decode(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return self.fallback.prepare(self.fallback.open(data, where))

    def _finish(self, img):
        from torchvision.transforms.v2 import functional as F

        img = F.resize(img, self.resize_size, interpolation=self.interpolation, antialias=self.antialias)
        img = F.center_crop(img, self.crop)
        return img.float().div_(255).sub_(self.mean).div_(self.std)

    def batch(self, prepared: list, datas: list, wheres: list) -> tuple[list, list]:
        """(tensors on the device, errors): one of the two is None per item."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        dev = self.bundle.device
        out: list = [None] * len(prepared)
        errors: list = [None] * len(prepared)
        jpeg_idx = [i for i, p in enumerate(prepared) if p.dtype == torch.uint8 and p.dim() == 1]
        decoded: dict[int, object] = {}
        if jpeg_idx:
            try:
                imgs = decode_jpeg([prepared[i] for i in jpeg_idx], mode=ImageReadMode.RGB, device=dev,
                                   apply_exif_orientation=True)
                decoded = dict(zip(jpeg_idx, imgs))
            except RuntimeError:  # one bad file fails the batch: decode one by one
                for i in jpeg_idx:
                    try:
                        decoded[i] = decode_jpeg(prepared[i], mode=ImageReadMode.RGB, device=dev,
                                                 apply_exif_orientation=True)
                    except RuntimeError:
                        pass
        for i, p in enumerate(prepared):
            if i in decoded:
                out[i] = self._finish(decoded[i])
            elif i in jpeg_idx:  # rejected by the tensor decoder: the PIL path names the problem
                try:
                    out[i] = self.fallback.prepare(self.fallback.open(datas[i], wheres[i])).to(dev)
                except Exception as e:  # noqa: BLE001 - reported per item
                    errors[i] = e
            else:
                out[i] = p.to(dev)
        return out, errors


def encode_image_tensor(bundle, pixels) -> np.ndarray:
    """[n,3,H,W] preprocessed pixels -> [n,d] float32 L2-normalised image embeddings."""
    import torch

    with torch.inference_mode(), bundle.autocast():
        x = _to_device(pixels, bundle)
        if bundle.precision in ("bf16", "fp16"):
            x = x.to(next(bundle.model.parameters()).dtype)
        f = bundle.model.encode_image(x).float()
        f = torch.nn.functional.normalize(f, dim=-1)
    return f.cpu().numpy().astype(np.float32, copy=False)


def encode_text_tokens(bundle, tokens) -> np.ndarray:
    """[n,L] token ids -> [n,d] float32 L2-normalised text embeddings."""
    import torch

    with torch.inference_mode(), bundle.autocast():
        f = bundle.model.encode_text(_to_device(tokens, bundle)).float()
        f = torch.nn.functional.normalize(f, dim=-1)
    return f.cpu().numpy().astype(np.float32, copy=False)


def embed_texts(bundle, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
    """Float32 L2-normalised text embeddings, one row per text (``None`` counts as empty)."""
    out = np.zeros((len(texts), bundle.embed_dim), np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = ["" if t is None else str(t) for t in texts[start:start + batch_size]]
        out[start:start + len(chunk)] = encode_text_tokens(bundle, bundle.tokenizer(chunk))
    return out


def embed_images(bundle, images: Sequence[Any], batch_size: int = 256, threads: int | None = None) -> np.ndarray:
    """Float32 L2-normalised image embeddings of PIL images, paths or encoded bytes, in order.

    An image that cannot be decoded raises ImageDecodeError naming it (use the embed job,
    which records failures instead, for web data).
    """

    return _embed_images(bundle, images, batch_size, threads, skip_undecodable=False)[0]


def embed_decodable_images(bundle, images: Sequence[Any], batch_size: int = 256,
                           threads: int | None = None) -> tuple[np.ndarray, list[tuple[int, ImageDecodeError]]]:
    """As ``embed_images``, but an image that cannot be decoded is left out instead of
    stopping the call: (the decodable images' embeddings in order, [(index, error), ...] of the others)."""
    out, errors = _embed_images(bundle, images, batch_size, threads, skip_undecodable=True)
    bad = np.zeros(len(out), bool)
    bad[[i for i, _ in errors]] = True
    return out[~bad], errors


def _embed_images(bundle, images: Sequence[Any], batch_size: int, threads: int | None,
                  skip_undecodable: bool) -> tuple[np.ndarray, list[tuple[int, ImageDecodeError]]]:
    images = list(images)
    out = np.zeros((len(images), bundle.embed_dim), np.float32)
    errors: list[tuple[int, ImageDecodeError]] = []
    pipe = ImagePipeline(bundle)

    def prepare(item):
        return pipe.prepare(open_image(item))

    for start, prepared in prepared_batches(images, prepare, batch_size, threads):
        rows = []
        for i, p in enumerate(prepared):
            if not isinstance(p, Exception):
                rows.append(i)
            elif skip_undecodable and isinstance(p, ImageDecodeError):
                errors.append((start + i, p))
            else:
                raise p
        if rows:
            out[[start + i for i in rows]] = encode_image_tensor(bundle, pipe.batch([prepared[i] for i in rows]))
    return out, errors


def list_image_folder(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``folder/<label>/*.<image>`` -> (sorted paths, labels); images directly in ``folder``
    get the label ``""``."""
    root = Path(folder)
    if not root.is_dir():
        raise CurateError(f"image folder {root} does not exist")
    paths, labels = [], []
    found = []  # class folders linked in (``ship -> /data/cifar10/ship``) are followed, as ImageFolder does
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath) / f for f in filenames]
    for p in sorted(found):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            rel = p.relative_to(root)
            paths.append(str(p))
            labels.append(rel.parts[0] if len(rel.parts) > 1 else "")
    if not paths:
        raise CurateError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return paths, labels


def embed_image_folder(folder: str | os.PathLike, bundle, batch_size: int = 256,
                       threads: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """Embed a labelled image folder such as ``cifar10_test/<class>/*.jpg``.

    Returns (paths, labels, embeddings): sorted paths, each image's class folder name, and
    float32 L2-normalised embeddings in the same order.
    """
    paths, labels = list_image_folder(folder)
    return paths, labels, embed_images(bundle, paths, batch_size=batch_size, threads=threads)
