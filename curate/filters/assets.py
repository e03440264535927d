"""image_based's inputs in the formats DataComp ships them, loaded without running pickled code.

DataComp publishes (``baselines/utils.py``'s asset list):
- pool centroids ``{small,medium,large,xlarge}_centroids_l14.pt``: a NumPy array (k x 768,
  float32) written with ``torch.save(array, path, pickle_protocol=4)``;
- ImageNet-1k target embeddings ``in1k_clip_vit_l14_{0..4}.pt``: ``torch.save`` of a dict whose
  ``image_features`` is a tensor (DataComp concatenates the five files).

A ``.pt`` file is read with ``torch.load(weights_only=True)``. That loader refuses a NumPy array
pickled with protocol 4 (DataComp's centroids), so those fall back to a restricted unpickler
of the file's ``data.pkl`` that can build NumPy arrays and nothing else (Python's documented
"restricting globals" pattern): no file is ever unpickled with arbitrary globals.
"""

from __future__ import annotations

import glob
import io
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np

from curate.errors import InputFileError

MATRIX_EXTS = (".npy", ".pt", ".pth")
# What pickling a NumPy array refers to (numpy 1.x and 2.x spell the module differently).
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_DTYPE_CLASS_MODULES = ("numpy.dtypes",)  # numpy 2 pickles dtypes by their class (Float32DType)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS or (module in _DTYPE_CLASS_MODULES and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed (only NumPy arrays are read)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("torch storages are read by torch.load, not here")


def _numpy_from_torch_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise InputFileError(str(path), "not a torch.save file (no data.pkl inside)")
        data = z.read(names[0])
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _load_torch(path: Path):
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about protocol 4 before refusing it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        if not zipfile.is_zipfile(path):
            raise InputFileError(str(path), f"cannot read it weights-only ({str(first).splitlines()[0]})") from first
        try:
            return _numpy_from_torch_zip(path)
        except pickle.UnpicklingError as e:
            raise InputFileError(str(path), f"holds more than arrays and tensors; refused ({e})") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise InputFileError(str(path), f"not a readable torch file ({e})") from e


def _as_matrix(obj, path: Path) -> np.ndarray:
    if isinstance(obj, dict):
        for key in ("image_features", "embeddings", "centroids"):
            if key in obj:
                return _as_matrix(obj[key], path)
        raise InputFileError(str(path), f"a dict without image_features, embeddings or centroids (keys: {sorted(obj)[:8]})")
    if hasattr(obj, "detach"):  # a torch tensor
        obj = obj.detach().cpu().float().numpy()
    x = np.asarray(obj)
    if x.dtype.kind != "f" or x.ndim != 2 or len(x) == 0:
        raise InputFileError(str(path), f"expected a non-empty 2-D float array, got dtype {x.dtype} shape {x.shape}")
    return x.astype(np.float32)


def load_matrix(path: str | Path) -> np.ndarray:
    """A float32 matrix (rows = vectors) from a .npy or a DataComp-style .pt file."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(str(p), "no such file")
    if p.suffix == ".npy":
        try:
            obj = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputFileError(str(p), f"not a readable .npy array ({e})") from e
    elif p.suffix in (".pt", ".pth"):
        obj = _load_torch(p)
    else:
        raise InputFileError(str(p), f"expected .npy or .pt, got {p.suffix or 'no extension'}")
    x = _as_matrix(obj, p)
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InputFileError(str(p), f"row {row}: not a finite vector")
    return x


def matrix_files(spec: str) -> list[Path]:
    """The .npy/.pt files a target spec names: one file, a folder holding such files, or a
    glob pattern (``in1k_clip_vit_l14_*.pt``); sorted. Empty when the spec names none."""
    p = Path(spec)
    if p.is_file():
        return [p] if p.suffix in MATRIX_EXTS else []
    if p.is_dir():
        return sorted(x for x in p.iterdir() if x.is_file() and x.suffix in MATRIX_EXTS)
    return sorted(Path(x) for x in glob.glob(spec) if Path(x).suffix in MATRIX_EXTS)


def load_matrices(files: list[Path]) -> np.ndarray:
    """Rows of every file, in order (DataComp concatenates its five ImageNet files)."""
    parts = [load_matrix(f) for f in files]
    dims = {x.shape[1] for x in parts}
    if len(dims) > 1:
        raise InputFileError(str(files[0].parent), f"files of different dims {sorted(dims)}: {[f.name for f in files]}")
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
