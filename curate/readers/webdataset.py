"""WebDataset tars (and img2dataset's tar output): one sample per member group (same key).

The caption comes from ``key.txt`` (else the json's caption/text), the url and sizes from
``key.json``. Images are not read here; they are downloaded or resharded later. Members are
only ever read, never extracted, and a member path that could escape a folder
(absolute, or with ``..``) makes its sample a reject. A key seen before in the same tar
(a member appended again, or a key whose members are not adjacent) is a
``duplicate_member_key`` reject: the first copy is the sample, never silently overwritten.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import (HEIGHT_CANDIDATES, TEXT_CANDIDATES, UID_CANDIDATES, URL_CANDIDATES,
                                 WIDTH_CANDIDATES, RawBuilder, ReaderOptions, clip_raw, encodable,
                                 extra_json, iter_flush, pick, stated_size)

_TEXT_EXT = {"txt", "text", "caption"}
_MAX_META = 10 << 20  # never load more than 10 MiB of a text/json member


def unsafe_member(name: str) -> bool:
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return True
    parts = posixpath.normpath(name.replace("\\", "/")).split("/")
    return ".." in name.replace("\\", "/").split("/") or parts[0] == ".."


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: key = path up to the first dot of the basename."""
    d, base = posixpath.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (posixpath.join(d, stem) if d else stem), ext.lower()


@dataclass
class _Group:
    """The members of one sample key as read from the tar (text and json read, others named)."""

    key: str
    index: int  # member group number in the tar
    repeat_of: str | None = None  # the member whose repeat started this group
    parts: dict[str, bytes] = field(default_factory=dict)
    unsafe: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    oversize: list[str] = field(default_factory=list)
    oversize_exts: set[str] = field(default_factory=set)

    def has(self, ext: str) -> bool:
        return ext in self.parts or ext in self.skipped or ext in self.oversize_exts


def read_webdataset(path: str, options: ReaderOptions) -> Iterator[pa.RecordBatch]:
    from curate import storage

    out = RawBuilder(options.batch_size)
    try:
        raw = storage.open_binary(path)  # a URI: streamed, never copied
    except OSError as e:
        raise InputFileError(path, f"not a readable tar file ({e})") from e
    try:
        tf = tarfile.open(fileobj=raw, mode="r|*")
    except (tarfile.TarError, OSError) as e:
        raw.close()
        raise InputFileError(path, f"not a readable tar file ({e})") from e
    group: _Group | None = None
    first_group: dict[str, int] = {}  # key -> its first member group: a repeat is a reject, not an overwrite
    try:
        for member in tf:
            if not member.isfile():
                continue  # folders, links, devices: never followed
            key, ext = split_key(member.name)
            # A member whose extension the current group already has starts a new group:
            # the same key again (a repeat), which ``_finish`` rejects.
            if group is None or key != group.key or group.has(ext):
                if group is not None:
                    _finish(out, group, first_group, options)
                if out.full():
                    yield from iter_flush(out)
                repeat = group is not None and key == group.key
                group = _Group(key, group.index + 1 if group else 0, repeat_of=member.name if repeat else None)
            if unsafe_member(member.name):
                group.unsafe.append(member.name)
            elif ext in _TEXT_EXT or ext == "json":
                if member.size > _MAX_META:
                    group.oversize.append(member.name)
                    group.oversize_exts.add(ext)
                    continue
                f = tf.extractfile(member)
                group.parts[ext] = f.read() if f is not None else b""
            else:
                group.skipped.append(ext)
        if group is not None:
            _finish(out, group, first_group, options)
    except (tarfile.TarError, OSError, EOFError) as e:
        index = group.index if group is not None else -1
        raise InputFileError(path, f"corrupt or truncated tar after member group {index} ({e})") from e
    finally:
        tf.close()
        raw.close()  # tarfile closes only the files it opened itself
    yield from iter_flush(out)


def _finish(out: RawBuilder, g: _Group, first_group: dict[str, int], options: ReaderOptions) -> None:
    """One sample from a member group, or a reject with its reason."""
    i = g.index
    if g.key in first_group:
        what = f"member {g.repeat_of}" if g.repeat_of else f"key {g.key!r}"
        out.reject(i, "duplicate_member_key",
                   f"{what} repeats in the tar (first at member group {first_group[g.key]}); only the first copy "
                   "is used", g.key)
        return
    first_group[g.key] = i
    if not encodable(g.key):
        out.reject(i, "text_not_utf8", f"tar member name {clip_raw(g.key)!r} is not valid UTF-8", g.key)
        return
    if g.unsafe:
        out.reject(i, "unsafe_member_path", f"tar member path escapes the folder: {g.unsafe[0]!r}", g.unsafe[0])
        return
    if g.oversize:
        out.reject(i, "text_too_long", f"member {g.oversize[0]!r} is larger than {_MAX_META} bytes", g.oversize[0])
        return
    read = _meta_and_text(out, g)
    if read is None:
        return
    meta, text = read
    cm = options.columns
    names = list(meta)
    url_c = pick(names, cm.url, URL_CANDIDATES)
    text_c = pick(names, cm.text, TEXT_CANDIDATES)
    if text is None and text_c:
        text = meta.get(text_c)
    url = meta.get(url_c) if url_c else None
    uid_c = pick(names, cm.uid, UID_CANDIDATES)
    uid = meta.get(uid_c) if uid_c else None
    if any(v is not None and not isinstance(v, str) for v in (url, text, uid)):
        out.reject(i, "wrong_type", f"sample {g.key}: url/caption/uid must be strings", g.parts.get("json"))
        return
    w_c = pick(names, cm.width, WIDTH_CANDIDATES)
    h_c = pick(names, cm.height, HEIGHT_CANDIDATES)
    w, h, problem = stated_size(meta.get(w_c) if w_c else None, meta.get(h_c) if h_c else None)
    if problem:
        out.reject(i, problem[0], f"sample {g.key}: {problem[1]}", g.parts.get("json"))
        return
    used = {url_c, text_c, uid_c, w_c, h_c}
    extra = {k: v for k, v in meta.items() if k not in used}
    extra["__key__"] = g.key
    extra["__members__"] = sorted(g.parts) + sorted(g.skipped)
    out.add(i, url=url, text=text, uid=uid, width=w, height=h, extra=extra_json(extra))


def _meta_and_text(out: RawBuilder, g: _Group) -> tuple[dict, str | None] | None:
    """The group's json object and caption member, or None after rejecting what cannot be read."""
    i, parts = g.index, g.parts
    meta = {}
    if "json" in parts:
        try:
            meta = json.loads(parts["json"].decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except UnicodeDecodeError as e:
            out.reject(i, "text_not_utf8", f"member {g.key}.json is not valid UTF-8 ({e.reason} at byte "
                       f"{e.start})", parts["json"])
            return None
        except ValueError as e:
            out.reject(i, "malformed_record", f"member {g.key}.json is not a JSON object ({e})", parts["json"])
            return None
    text = None
    txt_ext = next((e for e in parts if e in _TEXT_EXT), None)
    if txt_ext is not None:
        try:
            text = parts[txt_ext].decode("utf-8")
        except UnicodeDecodeError:
            out.reject(i, "text_not_utf8", f"member {g.key}.{txt_ext} is not valid UTF-8", parts[txt_ext])
            return None
    return meta, text
