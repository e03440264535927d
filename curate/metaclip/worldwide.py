"""MetaCLIP 2 worldwide curation: metadata per language, per-language matching and thresholds.

MetaCLIP 2 ("A Worldwide Scaling Recipe", 2025; ``metaclip/curation`` and ``metaclip/metadata``
of the MetaCLIP repository) curates alt-text in 300+ languages:

- one metadata list per language (``data/metadata/<lang>.json``, a JSON list; the sources per
  language are ``metadata_per_lang/<lang>.json``, a JSON object entry -> source letter);
- a caption's language from language ID selects that language's list; a language without
  metadata falls back to the list named ``other`` (MetaCLIP 2's ``lid_langcode_to_metadata_langcode``:
  an LID code mapped to "N/A", or no LID code at all, gives ``other``);
- matching is MetaCLIP v1's spaced substring match with one change: an entry gets its leading
  (trailing) space only when its first (last) character is not a CJK, Thai, Lao, Burmese,
  Khmer or Tibetan character or a punctuation mark (``get_spaced_metadata``), so entries of
  scripts written without spaces match anywhere inside a caption;
- the per-entry cap is set per language: English keeps ``t_en`` (20,000 for OpenAI CLIP's
  scale), every other language gets the t at which its tail proportion equals English's
  (``t_to_p`` then ``p_to_t``, below).

Tokenisers (jieba, fugashi + unidic-lite, pythainlp) are used as MetaCLIP 2 uses them: to cut
the texts that bigrams are mined from for languages written without spaces. ``tokens``
matching (an option, not MetaCLIP 2) also cuts captions and entries with them and matches
whole tokens only.

A worldwide metadata folder is read "as is": every ``<lang>.json`` in it is one language's
list (JSON list, or JSON object whose keys in order are the entries); other files (MetaCLIP 2's
``.pkl`` automata, curate's ``_build.json``) are ignored, never unpickled.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from curate import storage
from curate.errors import InputFileError

OTHER = "other"  # MetaCLIP 2's fallback list for languages without their own metadata
ENGLISH = "en"
MAX_ENTRY_CHARS = 256  # MetaCLIP 2's build_metadata drops longer entries

# MetaCLIP 2 (build_metadata.py / build_ngram.py): languages written without spaces.
NO_SPACE_LANGUAGES = frozenset({"bo", "dz", "ja", "km", "lo", "my", "ryu", "th", "zh", "zh_classical", "zh_yue"})
# The languages curate has a word segmenter for (jieba, fugashi + unidic-lite, pythainlp).
TOKENIZED_LANGUAGES = ("zh", "ja", "th")

# substr_matching.py's additional punctuation (full-width and CJK marks).
EXTRA_PUNCTUATION = frozenset("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
# build_metadata.py also has the inverted question mark for dropping pure-punctuation entries.
_BUILD_PUNCTUATION = frozenset(string.punctuation) | EXTRA_PUNCTUATION | {"¿"}
_MATCH_PUNCTUATION = frozenset(string.punctuation) | EXTRA_PUNCTUATION

_NO_SPACE_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),  # CJK
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
    # Thai, Lao, Burmese, Khmer, Tibetan
)


def is_cjk_or_similar(char: str) -> bool:
    """MetaCLIP 2's test for a character that needs no space beside it (see module doc).

    Note: as in MetaCLIP 2, Hiragana and Katakana are not in the ranges, nor is Hangul."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _NO_SPACE_RANGES) or char in _MATCH_PUNCTUATION


def spaced_entry(entry: str) -> str:
    """The automaton key of ``entry`` in MetaCLIP 2 (``get_spaced_metadata``)."""
    if not entry:
        return entry
    key = entry if is_cjk_or_similar(entry[0]) else f" {entry}"
    return key if is_cjk_or_similar(entry[-1]) else f"{key} "


def is_pure_punctuation(s: str) -> bool:
    return all(c in _BUILD_PUNCTUATION for c in s)


# ---------------------------------------------------------------- tokenisers
@dataclass(frozen=True)
class Tokenizer:
    name: str
    packages: tuple[str, ...]

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for p in self.packages:
            try:
                out[p] = version(p)
            except PackageNotFoundError:
                out[p] = "not installed"
        return out

    def describe(self) -> dict:
        return {"name": self.name, "versions": self.versions()}


_TOKENIZERS = {
    "zh": Tokenizer("jieba (default mode, HMM on)", ("jieba",)),
    "ja": Tokenizer("fugashi MeCab + unidic-lite (surface forms)", ("fugashi", "unidic-lite")),
    "th": Tokenizer("pythainlp word_tokenize (newmm)", ("pythainlp",)),
}
SPACE_TOKENIZER = Tokenizer("whitespace after MetaCLIP spacing", ())


def tokenizer_for(lang: str) -> Tokenizer:
    return _TOKENIZERS.get(base_language(lang), SPACE_TOKENIZER)


def base_language(lang: str) -> str:
    """``zh_yue`` -> ``zh``: MetaCLIP 2 merges a Wikipedia code's variants into its prefix."""
    return lang.split("_")[0]


_SEGMENTERS: dict[str, Callable[[str], list[str]]] = {}


def _segmenter(lang: str) -> Callable[[str], list[str]]:
    """The language's word segmenter, built once per process. A plain dict, not
    ``worker_cache``: the per-language matchers are built inside a ``worker_cache`` factory
    (which holds its lock) and call this."""
    lang = base_language(lang)
    if lang not in TOKENIZED_LANGUAGES:
        return str.split
    if lang not in _SEGMENTERS:
        _SEGMENTERS[lang] = _build_segmenter(lang)
    return _SEGMENTERS[lang]


def _build_segmenter(lang: str) -> Callable[[str], list[str]]:
    if lang == "zh":
        def build():
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            tk = jieba.Tokenizer()
            tk.initialize()
            return tk.lcut
    elif lang == "ja":
        def build():
            import fugashi

            tagger = fugashi.Tagger()
            return lambda text: [w.surface for w in tagger(text)]
    elif lang == "th":
        def build():
            from pythainlp.tokenize import word_tokenize

            return lambda text: word_tokenize(text, engine="newmm", keep_whitespace=False)
    return build()


def tokenize(text: str, lang: str) -> list[str]:
    """Words of ``text``: split on whitespace, then each piece cut by the language's segmenter
    (MetaCLIP 2's ``special_language_tokenizer``); whitespace only for other languages."""
    pieces = text.split()
    if base_language(lang) not in TOKENIZED_LANGUAGES:
        return pieces
    cut = _segmenter(lang)
    return [t for p in pieces for t in cut(p) if t.strip()]


# ---------------------------------------------------------------- metadata per language
@dataclass
class WorldwideMetadata:
    """Entry lists per language; global entry ids concatenate them in sorted language order."""

    languages: dict[str, list[str]]

    @property
    def order(self) -> list[str]:
        return sorted(self.languages)

    def ranges(self) -> list[tuple[str, int, int]]:
        out, start = [], 0
        for lang in self.order:
            n = len(self.languages[lang])
            out.append((lang, start, start + n))
            start += n
        return out

    def flat(self) -> list[str]:
        return [e for lang in self.order for e in self.languages[lang]]


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _element_lines(text: str) -> list[int]:
    """Line of each element of a JSON array (for error messages only)."""
    dec = json.JSONDecoder()
    lines, pos = [], text.index("[") + 1
    ws = " \t\r\n"
    while True:
        while pos < len(text) and text[pos] in ws + ",":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(_line_of(text, pos))
        _, pos = dec.raw_decode(text, pos)


def read_language_file(path: str | os.PathLike, allow_object: bool = True) -> list[str]:
    """One language's entries: a JSON list (``data/metadata/<lang>.json``) or, when
    ``allow_object``, a JSON object whose keys are the entries (``metadata_per_lang/<lang>.json``),
    in file order. Errors name the file and the line."""
    p = path  # a local path, or a dataset's copy on a store (read by the workers)
    try:
        text = storage.read_bytes(p).decode("utf-8")
    except FileNotFoundError:
        raise InputFileError(str(p), "metadata file not found") from None
    except UnicodeDecodeError as e:
        raise InputFileError(str(p), f"not a JSON file: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(str(p), f"not a JSON file (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if isinstance(data, dict) and allow_object:
        return list(data)
    if not isinstance(data, list):
        what = "a JSON list of strings" + (" or an object entry -> source" if allow_object else "")
        raise InputFileError(str(p), f"line 1: expected {what}, got a {type(data).__name__}")
    for i, e in enumerate(data):
        if not isinstance(e, str):
            line = _element_lines(text)[i]
            raise InputFileError(str(p), f"line {line}: entry {i} is {e!r} ({type(e).__name__}); "
                                         "every entry must be a string")
    return data


def is_language_file(p: Path) -> bool:
    return p.is_file() and p.suffix == ".json" and not p.name.startswith(("_", "."))


def load_worldwide(folder: str | os.PathLike) -> WorldwideMetadata:
    """Every ``<lang>.json`` of a metadata folder (curate's or MetaCLIP 2's), as is."""
    root = Path(folder)
    files = sorted(p for p in root.iterdir() if is_language_file(p))
    if not files:
        raise InputFileError(str(root), "no <lang>.json metadata files in this folder")
    return WorldwideMetadata({p.stem: read_language_file(p) for p in files})


def metadata_language(label: str | None, available: Iterable[str]) -> str | None:
    """The metadata list for a caption whose language ID label is ``label``: its own list,
    else ``other`` when there is one, else none (the caption matches nothing)."""
    available = set(available)
    if label and label in available:
        return label
    return OTHER if OTHER in available else None


# ---------------------------------------------------------------- thresholds (curate.py)
def t_to_p(counts: np.ndarray, t: float) -> float:
    """Tail proportion at t: the share of matches in entries matched fewer than t times."""
    c = np.asarray(counts, dtype=np.int64)
    total = c.sum()
    if total == 0:
        raise ValueError("no matches: the tail proportion is undefined")
    return float(c[c < t].sum() / total)


def p_to_t(counts: np.ndarray, p: float) -> int:
    """MetaCLIP 2's threshold for tail proportion p: counts sorted ascending (zeros included),
    their running share of the total, and the count where that share is closest to p (the
    first such count on ties)."""
    c = np.sort(np.asarray(counts, dtype=np.int64))
    total = c.sum()
    if total == 0:
        raise ValueError("no matches: the threshold is undefined")
    portion = np.cumsum(c) / total
    return int(c[int(np.abs(portion - p).argmin())])


def count_to_prob(counts: np.ndarray, t: float) -> np.ndarray:
    """MetaCLIP 2's ``count_to_prob``: 1 below t, t / count from t up. t = 0 (a language whose
    tail is empty) gives 0 for every matched entry, as theirs does (zero-count entries get 1:
    no caption holds them)."""
    c = np.asarray(counts, dtype=np.float64)
    if t <= 0:
        return np.where(c > 0, 0.0, 1.0)
    from curate.metaclip.balance import entry_probabilities

    return entry_probabilities(c, t)


@dataclass
class LanguageThreshold:
    lang: str
    start: int
    stop: int
    t: float | None  # None: no matches in this language, nothing to balance
    tail_proportion: float | None


def language_thresholds(counts: np.ndarray, ranges: Sequence[tuple[str, int, int]], t_en: float,
                        tail_proportion: float | None = None) -> tuple[float, list[LanguageThreshold]]:
    """Per-language t: English keeps ``t_en``; the others get ``p_to_t`` of English's tail
    proportion at ``t_en`` (or of ``tail_proportion`` when given). Returns (p, thresholds)."""
    from curate.errors import DatasetError

    counts = np.asarray(counts, dtype=np.int64)
    by_lang = {lang: (a, b) for lang, a, b in ranges}
    if tail_proportion is None:
        if ENGLISH not in by_lang or counts[slice(*by_lang[ENGLISH])].sum() == 0:
            raise DatasetError("worldwide balancing sets each language's t from English's tail proportion at t, "
                               "but no English caption matched the metadata: give --tail-proportion P")
        p = t_to_p(counts[slice(*by_lang[ENGLISH])], t_en)
    else:
        p = float(tail_proportion)
    out = []
    for lang, a, b in ranges:
        c = counts[a:b]
        if c.sum() == 0:
            out.append(LanguageThreshold(lang, a, b, None, None))
            continue
        t = float(t_en) if (lang == ENGLISH and tail_proportion is None) else float(p_to_t(c, p))
        out.append(LanguageThreshold(lang, a, b, t, t_to_p(c, t) if t > 0 else 0.0))
    return p, out


def range_probabilities(counts: np.ndarray, thresholds: Sequence[tuple[int, int, float | None]]) -> np.ndarray:
    """Entry probabilities with one t per id range (``(start, stop, t)``; t None: all 1)."""
    counts = np.asarray(counts)
    probs = np.ones(len(counts), dtype=np.float64)
    for a, b, t in thresholds:
        if t is not None:
            probs[a:b] = count_to_prob(counts[a:b], t)
    return probs
