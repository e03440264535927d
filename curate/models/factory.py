"""open_clip models by name: built-in or curate's small configs, with a pretrained tag or a
local checkpoint, random init when neither is given.

curate ships small architectures (``curate-tiny``, ``curate-small``) as JSON configs in
``curate/models/configs/`` and registers them with open_clip's own config registry
(``open_clip.add_model_config``), so every open_clip API (``create_model_and_transforms``,
``get_tokenizer``, ``open_clip_train --model curate-tiny``) knows them once
``register_configs()`` ran (every function here calls it).

``load_model`` returns a :class:`ModelBundle`: the eval-mode model, its eval preprocess,
its tokenizer and a ``model_id`` that names the weights (usable as a folder name, e.g.
``embeddings/<model_id>/``).

The factory of ``curate.models`` (open_clip's ``factory.py`` is the model: names and configs
in, models out); ``curate.models`` re-exports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from curate.errors import CurateError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # curate/models/configs/

# precision name -> (weight precision for open_clip, autocast dtype name or None)
PRECISIONS = {
    "fp32": ("fp32", None),
    "amp_bf16": ("fp32", "bfloat16"),
    "amp_fp16": ("fp32", "float16"),
    "bf16": ("pure_bf16", None),
    "fp16": ("pure_fp16", None),
}

_registered = False


class ModelError(CurateError):
    """A model name, pretrained tag or checkpoint cannot be used."""


def register_configs() -> list[str]:
    """Register curate's JSON configs with open_clip (idempotent); returns their names."""
    global _registered
    import open_clip

    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def list_models() -> list[str]:
    """Every architecture open_clip knows, curate's included."""
    import open_clip

    register_configs()
    return open_clip.list_models()


def list_pretrained_tags(name: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(name))


@dataclass
class ModelBundle:
    """An eval-mode open_clip model and what it takes to feed it."""

    model: Any
    preprocess: Callable  # PIL image -> CHW float tensor (the model's eval transform)
    tokenizer: Callable  # list[str] -> LongTensor [n, context_length]
    model_id: str
    name: str
    pretrained: str | None
    device: str
    precision: str
    embed_dim: int
    image_size: tuple[int, int]
    extra: dict = field(default_factory=dict)

    @property
    def autocast_dtype(self):
        """torch dtype for autocast, or None (fp32 or weights already cast)."""
        import torch

        name = PRECISIONS[self.precision][1]
        return getattr(torch, name) if name else None

    def autocast(self):
        """Context manager for inference under this bundle's precision."""
        import contextlib

        import torch

        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def file_digest(path: str | os.PathLike, nbytes: int = 12) -> str:
    """Short SHA-256 of a file's content (identifies a checkpoint wherever it lies)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:nbytes]


def checkpoint_file(pretrained: str | None) -> str | None:
    """``pretrained`` as something open_clip can open: a checkpoint named by URI (``s3://``,
    ``gs://``, a `curate train` output on a store) copied into the input cache, where it is kept
    while the object is unchanged (each machine that loads the model makes its own copy); a
    tag or a local path as it is."""
    from curate import storage

    if pretrained is None or not storage.is_uri(pretrained):
        return pretrained
    try:
        if storage.is_file(pretrained):
            return storage.local_copy(pretrained)
    except (OSError, storage.StorageError) as e:
        raise ModelError(f"checkpoint {pretrained}: cannot read it ({e})") from e
    raise ModelError(f"checkpoint {pretrained} does not exist")


def model_id_for(name: str, pretrained: str | None, seed: int = 0) -> str:
    """A folder-safe id for ``name`` + weights.

    Pretrained tag: ``ViT-B-32__laion2b_s34b_b79k``. Checkpoint file: ``<name>__<file stem>-<content
    hash>`` (same weights, same id, wherever the file lies: a checkpoint on a store gets the id of
    the same file on disk). No weights: ``<name>__random-seed<seed>``.
    """
    if pretrained is None and name.startswith("local-dir:"):
        # the folder's weights name it (not its path, nor "random": open_clip loads them)
        folder = Path(name[len("local-dir:"):]).expanduser()
        weights = _local_dir_weights(folder)
        label = f"local-dir-{_safe(folder.resolve().name)}"
        return f"{label}__{_safe(Path(weights).stem)}-{file_digest(weights)}" if weights else f"{label}__random-seed{seed}"
    if pretrained is None and name.startswith("hf-hub:"):
        return f"{_safe(name)}__hub"  # the repository's weights, as the hub serves them
    if pretrained is None:
        return f"{_safe(name)}__random-seed{seed}"
    local = checkpoint_file(pretrained)
    if os.path.isfile(local):
        return f"{_safe(name)}__{_safe(Path(local).stem)}-{file_digest(local)}"
    return f"{_safe(name)}__{_safe(pretrained)}"


def _local_dir_weights(folder: Path) -> str | None:
    """The weights file open_clip loads from a ``local-dir:`` folder (its own choice among the
    folder's .safetensors/.bin/.pth), or None when there is none."""
    try:
        from open_clip.factory import _find_checkpoint_in_dir  # open_clip's rule, not a copy of it
    except ImportError:  # pragma: no cover - an open_clip without it: the preferred names
        found = [folder / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if (folder / n).is_file()]
        return str(found[0]) if found else None
    return _find_checkpoint_in_dir(folder) if folder.is_dir() else None


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when one is visible, else ``cpu``; anything else is passed through."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str | None, device: str) -> str:
    """``auto``: bf16 autocast on a GPU that supports it, fp16 autocast on older GPUs, fp32 on CPU."""
    import torch

    if precision in (None, "", "auto"):
        if device.startswith("cuda"):
            return "amp_bf16" if torch.cuda.is_bf16_supported() else "amp_fp16"
        return "fp32"
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; use auto or one of {sorted(PRECISIONS)}")
    return precision


def check_model(name: str, pretrained: str | None, cache_dir: str | None = None) -> None:
    """A ModelError unless ``name`` is a known architecture and ``pretrained`` (if given) is a
    checkpoint file or one of its pretrained tags whose weights are cached or can be fetched.
    Loads nothing (cheap: run before any job; at most one short connection, curate.models.hub)."""
    import open_clip

    from curate.models.hub import unreachable_reason

    register_configs()
    if name.startswith("local-dir:"):
        return
    if name.startswith("hf-hub:"):
        if (reason := unreachable_reason(name, None, cache_dir)) is not None:
            raise ModelError(reason)
        return
    if open_clip.get_model_config(name) is None:
        import difflib

        known = list_models()
        by_lower = {k.lower(): k for k in known}  # vit-b-32 is ViT-B-32's typo, not a stranger to it
        near = [by_lower[k] for k in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
        raise ModelError(f"unknown model {name!r}; {'did you mean ' + ', '.join(near) + '? ' if near else ''}"
                         f"`curate models` lists the {len(known)} known names")
    if pretrained is not None:
        local = checkpoint_file(pretrained)
        is_file = os.path.isfile(local)
        looks_like_path = os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
        if not is_file and looks_like_path:
            raise ModelError(f"checkpoint {pretrained} does not exist")
        if is_file:
            _check_checkpoint_bytes(pretrained, local)
        if not is_file and pretrained not in list_pretrained_tags(name):
            raise ModelError(f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of {name} "
                             f"(tags: {', '.join(list_pretrained_tags(name)) or 'none'})")
        if not is_file and (reason := unreachable_reason(name, pretrained, cache_dir)) is not None:
            raise ModelError(reason)


def _check_checkpoint_bytes(name: str, path: str) -> None:
    """A checkpoint file starts as one can: a zip (torch.save), a pickle (torch's legacy format) or
    a safetensors header. An empty or text file failed deep inside torch (an EOFError naming no
    file, a KeyError traceback from open_clip_train); its first bytes are read, nothing more."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ModelError(f"checkpoint {name} is an empty file")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then its JSON header
        return
    raise ModelError(f"checkpoint {name} is not a PyTorch or safetensors file (it starts with {head[:8]!r})")


def _state_dict_keys(text: str, kind: str) -> list[str]:
    m = re.search(rf"{kind} key\(s\) in state_dict: (.*?)(?:\.\s*$|\.\s*\n|$)", text, re.DOTALL | re.MULTILINE)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []


def load_error_text(e: BaseException, most: int = 300) -> str:
    """One line for why open_clip could not load a model: torch's state-dict error names the
    missing and unexpected keys on lines after an empty first one; an empty file, text or
    another model's weights get a word of what they are."""
    text = str(e)
    kind = type(e).__name__
    if "Error(s) in loading state_dict" in text:
        parts = []
        for what in ("Missing", "Unexpected"):
            keys = _state_dict_keys(text, what)
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{what.lower()} keys {', '.join(keys[:3])}{more}")
        shapes = re.findall(r"size mismatch for ([^:]+):", text)
        if shapes:
            more = f" and {len(shapes) - 3} more" if len(shapes) > 3 else ""
            parts.append(f"other shapes for {', '.join(shapes[:3])}{more}")
        said = "; ".join(parts) or " ".join(text.split())
        return f"the checkpoint's weights do not fit this architecture ({said})"
    if isinstance(e, EOFError):
        return "the file is empty or cut short (EOFError)"
    if isinstance(e, AssertionError):
        return f"a checkpoint of another architecture? ({kind}: {' '.join(text.split()) or 'no message'})"
    if isinstance(e, KeyError):
        return f"not a checkpoint this architecture can read ({kind}: {text})"
    flat = " ".join(text.split())
    if len(flat) > most:
        flat = flat[:most].rsplit(" ", 1)[0] + " ..."
    return f"{kind}: {flat}" if flat else kind


@contextlib.contextmanager
def _random_weights_said_by_id(asked: bool):
    """Without open_clip's root-logger line "No pretrained weights loaded ... initialized randomly"
    when random weights are what was asked for (no --pretrained): the model id says so
    (``NAME__random-seedN``), and the line came once per process and task, as ``WARNING:root:``."""
    import logging

    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    if asked:
        root.addFilter(drop)
    try:
        yield
    finally:
        if asked:
            root.removeFilter(drop)


def load_model(name: str, pretrained: str | None = None, device: str = "cpu", precision: str = "auto",
               seed: int = 0, cache_dir: str | None = None) -> ModelBundle:
    """An eval-mode open_clip model, its eval preprocess and tokenizer.

    ``pretrained`` is an open_clip pretrained tag (downloaded into open_clip's cache, or found
    there) or a checkpoint file, local or a URI (``checkpoint_file``): a state dict or an
    open_clip_train checkpoint, loaded with ``weights_only=True``. ``None`` gives random weights
    from ``seed``.
    """
    import open_clip
    import torch

    register_configs()
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    schema_prefixed = name.startswith(("hf-hub:", "local-dir:"))
    weights = checkpoint_file(pretrained)  # a URI looked up and copied once, here
    check_model(name, weights, cache_dir)
    if pretrained is None:
        torch.manual_seed(seed)  # random init is reproducible from the seed
    try:
        with _random_weights_said_by_id(pretrained is None):
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=weights, device=device, precision=PRECISIONS[precision][0],
                cache_dir=cache_dir, weights_only=True)
    except (RuntimeError, AssertionError, KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        # a checkpoint of another architecture, a corrupt or empty file, a failed tag download,
        # or one holding pickled objects that the weights-only loader refuses to run
        where = f" from {pretrained}" if pretrained else ""
        raise ModelError(f"cannot load {name}{where}: {load_error_text(e)}") from e
    model.eval()
    tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    size = model.visual.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
    embed_dim = int(open_clip.get_model_config(name)["embed_dim"]) if not schema_prefixed else _probe_dim(model, device)
    return ModelBundle(model=model, preprocess=preprocess, tokenizer=tokenizer,
                       model_id=model_id_for(name, weights, seed), name=name, pretrained=pretrained,
                       device=device, precision=precision, embed_dim=embed_dim, image_size=size)


def _probe_dim(model, device) -> int:
    import torch

    with torch.no_grad():
        size = model.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        return int(model.encode_image(torch.zeros(1, 3, *size, device=device)).shape[-1])


def save_checkpoint(model, path: str | os.PathLike, **info) -> Path:
    """Write ``model``'s weights the way open_clip_train does ({"state_dict": ..., **info}),
    loadable with ``load_model(name, pretrained=path)``."""
    import io

    import torch

    from curate.tables import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), **info}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)

