"""img2dataset's downloader and resizer with curate's safety policy and image checks.

``SafeDownloader`` is img2dataset's per-shard ``Downloader``; around each shard it installs
the policy's urllib opener (curate.download.safety) in the worker process, so every fetch
img2dataset makes, redirects included, goes through the address check, the request
deadline, X-Robots-Tag and content decoding. ``SafeResizer`` decodes with Pillow before
img2dataset's OpenCV path: a decompression bomb is refused without being decoded, a
truncated file, a non-image and an image format nothing can decode are named as such, and
rotated, high-bit-depth, CMYK, palette and animated images are stored as a viewer shows them.
"""

from __future__ import annotations

import errno
import io
import os
import re
import urllib.request

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations; no network calls

import img2dataset.downloader as _i2d_downloader  # noqa: E402
from img2dataset.downloader import Downloader  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402

from curate.download.error_classes import is_transient  # noqa: E402
from curate.download.safety import FetchPolicy, build_opener  # noqa: E402


def download_with_transient_retries(row, timeout, retries, user_agent_token, disallowed_header_directives):
    """img2dataset's ``download_image_with_retry`` asking again only after an error another attempt
    can change (``is_transient``): img2dataset's asks a server ``--retries`` more times for a 404, an
    opt-out or a page that is not an image, each the same answer, and re-runs refused URLs."""
    for _ in range(retries + 1):
        key, img_stream, err = _i2d_downloader.download_image(row, timeout, user_agent_token,
                                                              disallowed_header_directives)
        if img_stream is not None or not is_transient(err):
            break
    return key, img_stream, err


def _ppm(pixels) -> bytes:
    """Grey (HxW) or RGB (HxWx3) uint8 pixels as binary PGM/PPM: lossless and nearly free to
    write and for OpenCV to read, so img2dataset's resizer can take Pillow's pixels."""
    h, w = pixels.shape[:2]
    magic = b"P5" if pixels.ndim == 2 else b"P6"
    return magic + b"\n%d %d\n255\n" % (w, h) + pixels.tobytes()


SHARD_FILE_PREFIX = "curate-shard-"


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def remove_stale_shard_files(root: str | None = None) -> list[str]:
    """Remove the shard feather files in ``root`` (the system temporary folder) of download
    tasks on this host whose process is gone (killed before its ``finally`` ran); returns them.
    Files of live processes and of other hosts stay."""
    import tempfile

    from curate.object_lock import pid_alive

    root = root or tempfile.gettempdir()
    pattern = re.compile(rf"{re.escape(SHARD_FILE_PREFIX)}{_host_tag()}-(\d+)-[^/]*\.feather")
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(root, name))
                removed.append(os.path.join(root, name))
            except OSError:
                pass
    return removed


class SafeResizer(Resizer):
    """img2dataset's Resizer behind a Pillow decode.

    Pillow reads the header first (a decompression bomb is refused without being decoded),
    then decodes fully (a truncated or corrupt file is named as such). Plain 8-bit JPEG, PNG
    and WebP images without an EXIF rotation or a non-sRGB colour profile go to
    img2dataset's OpenCV path unchanged (the original bytes are kept when no resize is
    needed). Every other image, or one that OpenCV cannot decode, is turned into what a
    viewer shows (curate.imaging: upright, in sRGB, 16-bit and float scaled, CMYK and
    palettes converted, transparency over white, first frame of an animation) and handed to
    the same resizer, so the stored image and its width/height are the displayed ones.
    """

    _OPENCV_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import warnings

        from PIL import Image

        # --max-image-area is the limit (checked from the header below): Pillow's own, a
        # process-wide setting, is raised to it so that it neither refuses a smaller image first
        # nor prints its warning for one this check refuses
        if Image.MAX_IMAGE_PIXELS is not None and self.max_image_area > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = int(self.max_image_area)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

    def __call__(self, img_stream, blurring_bbox_list=None):
        from PIL import Image

        from curate.imaging import display_pixels, icc_needs_conversion, orientation, sniff_image_format

        failed = (None, None, None, None, None)
        boxes = blurring_bbox_list if self.blurrer is not None else None  # curate blurs later, if at all
        img_stream.seek(0)
        data = img_stream.read()
        if not data:
            return (*failed, "not an image (empty body)")
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > self.max_image_area:
                    return (*failed, (f"image area too large ({w}x{h} pixels, over --max-image-area "
                                      f"{self.max_image_area:.0f})"))
                fmt = im.format or "?"
                # 16-bit samples (e.g. RGB;16B) load into 8-bit modes here but reach OpenCV as 16-bit
                deep = any(re.search(r";(16|32)", str(t[3][0] if isinstance(t[3], tuple) else t[3]))
                           for t in (im.tile or []))
                try:
                    im.load()  # catches truncated and corrupt files OpenCV would half-decode
                except OSError as e:
                    if re.search(r"decoder \S+ not available|Ghostscript|not supported|unsupported", str(e), re.I):
                        return (*failed, f"unsupported image format {fmt}: {e}")
                    raise
                # MPO (a camera JPEG carrying extra pictures) is a JPEG whose first picture OpenCV reads
                # Face boxes (DataComp's face_bboxes) are relative to the stored pixels of DataComp's
                # own download, which never applied EXIF orientation: an image that has boxes
                # keeps that frame, so the resharder's --apply-blur covers the faces.
                rotate = not blurring_bbox_list
                plain = (fmt in self._OPENCV_FORMATS and im.mode in ("L", "RGB", "RGBA") and not deep
                         and (fmt == "MPO" or not getattr(im, "is_animated", False))
                         and (orientation(im) == 1 or not rotate) and not icc_needs_conversion(im))
                if plain:
                    result = super().__call__(io.BytesIO(data), boxes)
                    if result[-1] is None or "decoding error" not in result[-1]:
                        return result
                    # OpenCV could not decode what Pillow did: go on with Pillow's pixels
                pixels = display_pixels(im, apply_orientation=rotate)
        except Image.DecompressionBombError as e:  # over twice --max-image-area: refused by Pillow as it opens
            return (*failed, f"image area too large (over --max-image-area {self.max_image_area:.0f}: {e})")
        except Image.UnidentifiedImageError:
            named = sniff_image_format(data)
            if named:
                return (*failed, f"unsupported image format {named}: no installed decoder reads it")
            return (*failed, f"not an image (content starts with {data[:16]!r})")
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            return (*failed, f"decode error: {e}")
        return super().__call__(io.BytesIO(_ppm(pixels)), boxes)


# a write that no later sample can succeed at: the disk or quota is full, the folder read-only
_WRITES_STOPPED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class _WriterStoppedQuietly:
    """img2dataset's sample writer, called as its class is: once a write fails for a reason no
    later sample can escape (``_WRITES_STOPPED``), the rest of the shard's writes are dropped
    instead of each failing with a traceback img2dataset prints (a full disk printed 80,000
    lines); the error is kept in ``errors`` by shard and the downloader raises it once."""

    def __init__(self, writer_class, errors: dict):
        self.writer_class, self.errors = writer_class, errors

    def __call__(self, shard_id, *args, **kwargs):
        return _StoppingWriter(self.writer_class(shard_id, *args, **kwargs), shard_id, self.errors)


class _StoppingWriter:
    def __init__(self, writer, shard_id, errors: dict):
        self.writer, self.shard_id, self.errors = writer, shard_id, errors

    def _call(self, method, *args, **kwargs):
        if self.shard_id in self.errors:
            return None
        try:
            return getattr(self.writer, method)(*args, **kwargs)
        except OSError as e:
            if e.errno not in _WRITES_STOPPED:
                raise
            self.errors[self.shard_id] = e
            return None

    def write(self, *args, **kwargs):
        return self._call("write", *args, **kwargs)

    def close(self):
        return self._call("close")


class SafeDownloader(Downloader):
    """img2dataset's Downloader whose fetches go through ``policy``'s opener."""

    def __init__(self, *args, policy: FetchPolicy, **kwargs):
        from curate import storage

        super().__init__(*args, **kwargs)
        self.write_errors: dict = {}  # shard id -> the write error that stopped it
        self.sample_writer_class = _WriterStoppedQuietly(self.sample_writer_class, self.write_errors)
        self.policy = policy
        # a task writes its shard through fsspec: on a cluster's executors (which do not inherit
        # the driver's environment) with the driver's storage settings
        self.storage_env = storage.worker_env()

    def __call__(self, row):
        """Download one shard: ``row`` is (shard id, its todo part), as ``todo_shards`` lists them,
        or (shard id, an img2dataset feather file). Returns (done, the row as given), so that a
        retry, on any worker, starts again from the part."""
        from curate import storage

        storage.apply_worker_env(self.storage_env)
        storage.configure_fsspec()
        shard_id, source = row
        feather = self.shard_file(source) if str(source).endswith(".parquet") else None
        previous = urllib.request._opener  # restore afterwards: Spark reuses this worker process
        urllib.request.install_opener(build_opener(self.policy))
        # img2dataset's shard loop looks its retry function up in its module when it calls it
        previous_retry = _i2d_downloader.download_image_with_retry
        _i2d_downloader.download_image_with_retry = download_with_transient_retries
        try:
            ok, _ = super().__call__((shard_id, feather or source))
            stopped = self.write_errors.pop(shard_id, None)
            if stopped is not None:  # the job stops: every later shard would fail the same way
                from curate.errors import DatasetError

                # img2dataset counted the dropped writes as done: no file of the shard may say
                # it is complete (its stats file is what a rerun skips by)
                stem = f"{shard_id:0{self.oom_shard_count}d}"
                for suffix in ("_stats.json", ".parquet", ".tar"):
                    try:
                        storage.delete(storage.resolve(storage.join(self.output_folder, stem + suffix)))
                    except Exception:  # noqa: BLE001, S110 - the error below is what the user needs
                        pass
                raise DatasetError(f"cannot write the images of shard {shard_id} to {self.output_folder}: "
                                   f"{stopped.strerror or stopped}")
            return ok, row
        finally:
            urllib.request._opener = previous
            _i2d_downloader.download_image_with_retry = previous_retry
            if feather is not None and os.path.exists(feather):  # img2dataset removes it when done
                os.unlink(feather)

    def shard_file(self, part: str) -> str:
        """The shard's rows as img2dataset's reader would have cut them from its todo part: its
        url, text (as ``caption``) and carried columns in ``column_list`` order, in a feather
        file local to this task (the driver reads no todo row)."""
        import tempfile

        import pyarrow as pa

        from curate import storage

        carried = [c for c in self.column_list if c not in ("caption", "url")]
        t = storage.read_parquet(part, columns=["url", "text", *carried])
        t = t.rename_columns(["caption" if c == "text" else c for c in t.column_names]).select(self.column_list)
        remove_stale_shard_files()
        fd, path = tempfile.mkstemp(prefix=f"{SHARD_FILE_PREFIX}{_host_tag()}-{os.getpid()}-", suffix=".feather")
        os.close(fd)
        with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, t.schema) as writer:
            writer.write_table(t)
        return path
