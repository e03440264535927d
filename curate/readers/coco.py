"""COCO-style caption files: {"images": [...], "annotations": [{"image_id", "caption"}...]}.

One sample per caption annotation; url = the image's coco_url (else flickr_url), size from
the image record. source_row is the annotation's index in the file.
"""

from __future__ import annotations

import json
import re
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import RawBuilder, ReaderOptions, extra_json, stated_size, iter_flush


_COCO_FIRST_KEY = re.compile(rb'\{\s*"(info|licenses|images|annotations|categories)"\s*:\s*[\[{]')


def is_coco(path: str) -> bool:
    from curate import storage

    try:  # a sniff: one small read of an object, not a stream block
        with storage.open_random(path) as f:
            head = f.read(4096)
    except (OSError, storage.StorageError):
        return False
    h = head.lstrip()
    if not h.startswith(b"{"):
        return False
    # the images list, or any COCO section as the first key (an annotations list of a few MB
    # may come first, so "images" need not be in the head)
    return b'"images"' in head or b'"info"' in head or bool(_COCO_FIRST_KEY.match(h))


def read_coco(path: str, options: ReaderOptions) -> Iterator[pa.RecordBatch]:
    from curate import storage

    try:
        with storage.open_binary(path) as f:
            # Bytes that are not UTF-8 stay as surrogate escapes: only the annotations holding
            # them become text_not_utf8 rejects (RawBuilder), not the whole file.
            doc = json.loads(f.read().decode("utf-8", "surrogateescape"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputFileError(path, f"not a readable COCO captions JSON file ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list) or not isinstance(doc.get("images"), list):
        raise InputFileError(path, "expected a JSON object with 'images' and 'annotations' lists (COCO captions format)")
    images = {}
    for im in doc["images"]:
        if isinstance(im, dict) and _is_id(im.get("id")):
            images[im["id"]] = im
    url_key = options.columns.url
    out = RawBuilder(options.batch_size)
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            out.reject(i, "malformed_record", f"annotation {i} is not an object", json.dumps(ann)[:2000])
            continue
        im = images.get(ann.get("image_id")) if _is_id(ann.get("image_id")) else None
        if im is None:
            out.reject(i, "malformed_record", f"annotation {i}: image_id {ann.get('image_id')!r} has no image record",
                       json.dumps(ann, ensure_ascii=False))
            continue
        caption = ann.get("caption")
        if caption is not None and not isinstance(caption, str):
            out.reject(i, "wrong_type", f"annotation {i}: caption must be a string", json.dumps(ann, ensure_ascii=False))
            continue
        url = im.get(url_key) if url_key else (im.get("coco_url") or im.get("flickr_url") or im.get("url"))
        w, h, problem = stated_size(im.get("width"), im.get("height"))
        if problem:
            out.reject(i, problem[0], f"annotation {i}: its image's {problem[1]}", json.dumps(im, ensure_ascii=False))
            continue
        extra = extra_json({"image_id": ann.get("image_id"), "annotation_id": ann.get("id"),
                            "file_name": im.get("file_name"), "flickr_url": im.get("flickr_url"),
                            "license": im.get("license")})
        out.add(i, url=url if isinstance(url, str) else None, text=caption, width=w, height=h, extra=extra)
        if out.full():
            yield from iter_flush(out)
    yield from iter_flush(out)


def _is_id(v) -> bool:
    """A COCO id: a number or a string (a list or an object cannot name an image record)."""
    return isinstance(v, (int, float, str)) and not isinstance(v, bool)
