"""``embed_shard``: one image shard's samples embedded (decode, preprocess, embed images and
captions; every uid embedded or a failure with its class). Needs neither Spark nor a dataset
writer: a GPU box can benchmark and run it in a plain loop."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from curate.embed.core import (ImageDecodeError, ImagePipeline, TensorJpegPipeline, encode_image_tensor,
                               encode_text_tokens, prepared_batches)
from curate.errors import CurateError
from curate.tables import load_schema


# ---------------------------------------------------------------- the per-shard function
def embed_shard(bundle, uids: list[str], keys: list[str], texts: list[str], images: dict[str, bytes],
                shard: str, batch_size: int, threads: int | None = None,
                uint8_transfer: bool | None = None, fast_decode: bool = False,
                decode: str = "pil") -> tuple[pa.Table, pa.Table, dict]:
    """Embed one shard's samples. Returns (embeddings table, failures table, stats).

    ``images`` maps key -> encoded bytes; a key without bytes is a ``missing_member`` failure.
    Every input uid lands in exactly one of the two tables.

    ``decode``: ``pil`` decodes and preprocesses in the threads with Pillow (open_clip's own
    transform); ``uint8_transfer`` (default: on CUDA) then moves uint8 pixels to the device and
    normalises there, ``fast_decode`` decodes large JPEGs at reduced scale. ``tensor`` decodes
    JPEG batches with torchvision on the model's device (nvJPEG on CUDA) and resizes there
    (see TensorJpegPipeline); it falls back to ``pil`` when the transform is not the usual one.
    """
    if decode not in ("pil", "tensor"):
        raise CurateError(f"decode must be pil or tensor, got {decode!r}")
    t0 = time.perf_counter()
    n = len(uids)
    d = bundle.embed_dim
    img_out = np.zeros((n, d), np.float32)
    txt_out = np.zeros((n, d), np.float32)
    ok = np.zeros(n, bool)
    model_s = 0.0
    pipe = ImagePipeline(bundle, uint8=uint8_transfer, fast_decode=fast_decode)
    tpipe = TensorJpegPipeline(bundle) if decode == "tensor" else None
    samples = _ShardSamples(uids, keys, images, shard, pipe, tpipe if tpipe is not None and tpipe.usable else None)
    for start, prepared in prepared_batches(list(range(n)), samples.prepare, batch_size, threads):
        good = []
        for j, p in enumerate(prepared):
            (samples.fail(start + j, p) if isinstance(p, Exception) else good.append((start + j, p)))
        if not good:
            continue
        tm = time.perf_counter()
        good, pixels = samples.pixels(good)
        if not good:
            continue
        idx = np.array([i for i, _ in good])
        img_out[idx] = encode_image_tensor(bundle, pixels)
        txt_out[idx] = encode_text_tokens(bundle, bundle.tokenizer([texts[i] or "" for i in idx]))
        model_s += time.perf_counter() - tm
        ok[idx] = True

    keep = np.flatnonzero(ok)
    emb = embeddings_table(np.asarray(uids, dtype=object)[keep].tolist(), img_out[keep], txt_out[keep])
    fail_schema = load_schema("embed_failures").arrow()
    failures = samples.failures
    fails = pa.Table.from_pylist(failures, schema=fail_schema) if failures else fail_schema.empty_table()
    stats = {"samples": n, "embedded": int(len(keep)), "failed": len(failures),
             "seconds": round(time.perf_counter() - t0, 4), "model_seconds": round(model_s, 4),
             "decode": "tensor" if samples.tpipe is not None else "pil"}
    return emb, fails, stats


class _ShardSamples:
    """One shard's samples as ``embed_shard`` decodes them: each failure recorded with its
    class, every other sample prepared and batched into pixels."""

    def __init__(self, uids: list[str], keys: list[str], images: dict[str, bytes], shard: str, pipe, tpipe):
        self.uids, self.keys, self.images, self.shard = uids, keys, images, shard
        self.pipe, self.tpipe = pipe, tpipe
        self.failures: list[dict] = []

    def where(self, i: int) -> str:
        return f"{self.shard}:{self.keys[i]}"

    def prepare(self, i: int):
        data = self.images.get(self.keys[i])
        if data is None:
            raise ImageDecodeError(self.where(i), "missing_member", "the image shard has no image for this key")
        try:
            if self.tpipe is not None:
                return self.tpipe.prepare(data, self.where(i))
            return self.pipe.prepare(self.pipe.open(data, where=self.where(i)))
        except ImageDecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - a transform error is this sample's failure, not the job's
            raise ImageDecodeError(self.where(i), "preprocess_error", f"{type(e).__name__}: {e}") from e

    def fail(self, i: int, err: Exception) -> None:
        cls = err.error_class if isinstance(err, ImageDecodeError) else "decode_error"
        msg = str(err) if isinstance(err, ImageDecodeError) else f"{type(err).__name__}: {err}"
        self.failures.append({"uid": self.uids[i], "shard": self.shard, "key": self.keys[i], "error_class": cls,
                              "error_message": msg})

    def pixels(self, good: list[tuple]) -> tuple[list[tuple], object]:
        """The batch's pixels and the samples in them (tensor decoding may fail more of them)."""
        if self.tpipe is None:
            return good, self.pipe.batch([p for _, p in good])
        import torch

        idx_all = [i for i, _ in good]
        tensors, errors = self.tpipe.batch([p for _, p in good], [self.images[self.keys[i]] for i in idx_all],
                                           [self.where(i) for i in idx_all])
        good = []
        for i, t, e in zip(idx_all, tensors, errors):
            (self.fail(i, e) if e is not None else good.append((i, t)))
        return good, (torch.stack([t for _, t in good]) if good else None)


def embeddings_table(uids: list[str], image_emb: np.ndarray, text_emb: np.ndarray) -> pa.Table:
    """The embeddings schema: float16 fixed-size lists; clip_score from the float32 vectors."""
    d = image_emb.shape[1]
    score = np.einsum("ij,ij->i", image_emb, text_emb).astype(np.float32)

    def fsl(a: np.ndarray) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(a, dtype=np.float16).reshape(-1), pa.float16())
        return pa.FixedSizeListArray.from_arrays(flat, d)

    schema = load_schema("embeddings").arrow(d)
    return pa.Table.from_arrays([pa.array(uids, pa.string()), fsl(image_emb), fsl(text_emb),
                                 pa.array(score, pa.float32())], schema=schema)
