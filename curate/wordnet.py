"""WordNet over Debian's ``wordnet-base`` files, read with NLTK's ``WordNetCorpusReader``.

curate never downloads NLTK data: the WordNet 3.0 database files come from the OS package
(``apt-get install wordnet-base`` puts them in ``/usr/share/wordnet``). Two gaps between
that package and what NLTK expects are bridged here:

- NLTK >= 3.9 only opens files under its data roots, so the folder is added to
  ``nltk.data.path`` before the reader is built.
- Debian ships no ``lexnames`` file; its 45 lines are fixed by the WordNet 3.0 format
  (lexnames(5WN)) and are served from memory.

The reader is built once per process (a few seconds: NLTK indexes every lemma) and cached.
Set ``CURATE_WORDNET_DIR`` or pass ``root`` to read another copy of the same files.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path

from curate.errors import CurateError

DEFAULT_ROOT = "/usr/share/wordnet"
ENV_VAR = "CURATE_WORDNET_DIR"

# WordNet 3.0 lexicographer files: number, name, syntactic category (lexnames(5WN)).
_LEXNAMES = (
    "adj.all 3|adj.pert 3|adv.all 4|noun.Tops 1|noun.act 1|noun.animal 1|noun.artifact 1|"
    "noun.attribute 1|noun.body 1|noun.cognition 1|noun.communication 1|noun.event 1|"
    "noun.feeling 1|noun.food 1|noun.group 1|noun.location 1|noun.motive 1|noun.object 1|"
    "noun.person 1|noun.phenomenon 1|noun.plant 1|noun.possession 1|noun.process 1|"
    "noun.quantity 1|noun.relation 1|noun.shape 1|noun.state 1|noun.substance 1|noun.time 1|"
    "verb.body 2|verb.change 2|verb.cognition 2|verb.communication 2|verb.competition 2|"
    "verb.consumption 2|verb.contact 2|verb.creation 2|verb.emotion 2|verb.motion 2|"
    "verb.perception 2|verb.possession 2|verb.social 2|verb.stative 2|verb.weather 2|adj.ppl 3"
).split("|")
LEXNAMES_TEXT = "".join(
    f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(x.split() for x in _LEXNAMES)
)

# Files the reader cannot work without (lexnames is supplied above when absent).
REQUIRED_FILES = tuple(
    f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")
)

_lock = threading.Lock()
_readers: dict[str, object] = {}
_names: dict[str, list[str]] = {}


class WordNetMissingError(CurateError):
    """The WordNet database files are not installed where curate looks for them."""


def wordnet_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the WordNet files: ``root``, else $CURATE_WORDNET_DIR, else Debian's."""
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def check_wordnet(root: str | os.PathLike | None = None) -> Path:
    """The resolved WordNet folder; raises ``WordNetMissingError`` naming what is missing."""
    path = wordnet_root(root)
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise WordNetMissingError(
            f"WordNet database not found in {path} (missing {', '.join(missing)}). "
            "Install Debian/Ubuntu's package with `apt-get install wordnet-base`, or point "
            f"${ENV_VAR} (or --wordnet-dir) at a folder with the WordNet 3.0 dict files."
        )
    return path.resolve()


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _DebianWordNetReader(WordNetCorpusReader):
        def open(self, file):  # noqa: A003 - overrides CorpusReader.open
            if file == "lexnames" and not os.path.exists(os.path.join(str(self._root), file)):
                return io.StringIO(LEXNAMES_TEXT)
            return super().open(file)

        def map_wn(self, version="wordnet"):
            # Mapping to other WordNet versions needs NLTK's downloaded corpora; not used.
            return None

    return _DebianWordNetReader


def get_wordnet(root: str | os.PathLike | None = None):
    """NLTK ``WordNetCorpusReader`` over the WordNet files, built once per process."""
    path = check_wordnet(root)
    key = str(path)
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            import nltk.data

            if key not in [str(p) for p in nltk.data.path]:
                nltk.data.path.append(key)
            with warnings.catch_warnings():
                # "multilingual functions are not available": expected, no OMW data.
                warnings.simplefilter("ignore", UserWarning)
                reader = _reader_class()(key, None)
            _readers[key] = reader
        return reader


def synset_names(root: str | os.PathLike | None = None) -> list[str]:
    """All synset names (``dog.n.01``...) in ``all_synsets()`` order (pos a, r, n, v; then offset).

    Same names as ``[s.name() for s in get_wordnet().all_synsets()]`` (the tests check it)
    without building the reader: only the lemma index and each data line's head (offset,
    pos, first lemma) are parsed, about a second instead of twenty. Cached per process;
    callers get a fresh list.
    """
    path = str(check_wordnet(root))
    with _lock:
        names = _names.get(path)
    if names is None:
        names = _scan_synset_names(Path(path))
        with _lock:
            _names[path] = names
    return list(names)


_POS_FILES = (("a", "adj"), ("r", "adv"), ("n", "noun"), ("v", "verb"))  # NLTK's _FILEMAP order


def _scan_synset_names(path: Path) -> list[str]:
    heads: dict[str, list[tuple[int, str, str]]] = {}
    for _, suffix in _POS_FILES:
        rows = heads[suffix] = []
        with open(path / f"data.{suffix}", encoding="utf-8") as f:
            for line in f:
                if line[:1].isspace():  # license header
                    continue
                head = line.split(" ", 5)
                rows.append((int(head[0]), head[2], _SYNTACTIC_MARKER.sub("", head[4]).lower()))
    satellites = {off for off, pos, _ in heads["adj"] if pos == "s"}
    # lemma -> pos -> synset offsets in sense order (index.<pos>); satellites ("s") are the
    # adjective senses that are satellites, in the same order, as NLTK numbers them.
    senses: dict[str, dict[str, list[int]]] = {}
    for pos, suffix in _POS_FILES:
        with open(path / f"index.{suffix}", encoding="utf-8") as f:
            for line in f:
                if line.startswith(" "):
                    continue
                tok = line.split()
                n_synsets, n_pointers = int(tok[2]), int(tok[3])
                offsets = [int(x) for x in tok[6 + n_pointers:6 + n_pointers + n_synsets]]
                entry = senses.setdefault(tok[0], {})
                entry[pos] = offsets
                if pos == "a":
                    entry["s"] = [o for o in offsets if o in satellites]
    names = []
    for _, suffix in _POS_FILES:
        for offset, pos, lemma in heads[suffix]:
            sense = senses[lemma][pos].index(offset) + 1
            names.append(f"{lemma}.{pos}.{sense:02d}")
    return names


_SYNTACTIC_MARKER = re.compile(r"\([^()]*\)$")  # adjective position markers: (a), (p), (ip)


def synset_lemma(name: str) -> str:
    """The part of a synset name before its first dot, underscores as spaces (MetaCLIP's rule).

    ``"hot_dog.n.01" -> "hot dog"``; ``"a.d..n.01"``-style names keep everything before the
    first dot, as MetaCLIP's ``name.split('.')[0]`` does.
    """
    return name.split(".", 1)[0].replace("_", " ")
