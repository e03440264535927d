"""Concept lists for the coverage report: an eval set's class names, a concept or synset
list file, or MetaCLIP metadata entries.

A concept is matched in captions with the MetaCLIP matcher (``curate.metaclip.matching``),
so its name is used as is: case matters and an entry holding ``, . ; : ? !`` or a backtick
can never match. Lists from files are checked line by line (one-line errors naming the file
and line); a MetaCLIP metadata file is taken as is, like ``curate metadata match`` does.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from curate.errors import InputFileError
from curate.metaclip.matching import PUNCTS_TO_WRAP, can_match, load_metadata

# ImageNet's LOC_synset_mapping.txt / synset_words.txt: "n01440764 tench, Tinca tinca"
_WNID_LINE = re.compile(r"^n\d{8}\s+(.+)$")
# a WordNet synset name: "hot_dog.n.01"
_SYNSET_NAME = re.compile(r"^([^\s.]+)\.([nvasr])\.(\d{2})$")
MAX_CONCEPT_CHARS = 200


@dataclass
class ConceptList:
    """Concept names in order (a concept's id is its position) and where they came from."""

    names: list[str]
    kind: str                      # eval | file | metadata
    source: str                    # the folder or file they were read from
    labels: list[str] = field(default_factory=list)  # eval class folder names, when kind == eval

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.names, ensure_ascii=False).encode()).hexdigest()

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.source, "concepts": len(self.names), "sha256": self.sha256()}


def from_eval_folder(folder: str | os.PathLike) -> ConceptList:
    """Class names of a labelled image folder ``FOLDER/<class>/``: the sub-folder names with
    ``_`` read as a space, sorted, exactly as ``curate eval`` names the classes."""
    root = Path(folder)
    if not root.is_dir():
        raise InputFileError(str(root), "eval folder does not exist (expected FOLDER/<class>/*.jpg)")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not labels:
        raise InputFileError(str(root), "no class sub-folders (expected FOLDER/<class>/*.jpg)")
    names = [lab.replace("_", " ") for lab in labels]
    _check_names(names, str(root), [f"class folder {lab!r}" for lab in labels])
    return ConceptList(names, "eval", str(root), labels)


def from_metadata(path: str | os.PathLike) -> ConceptList:
    """MetaCLIP metadata entries (a JSON list of strings), as is: order and repeats kept, so a
    concept's id is the entry id of ``curate metadata match``. Worldwide (MetaCLIP 2) metadata,
    a folder of per-language lists or a dataset's concatenation of one, is refused: coverage
    counts every caption against one list with v1's matching, which is not how such a pool was
    matched (each caption against its language's list), so its counts would not be the pool's."""
    p = Path(path)
    if p.is_dir() or (p.parent / "languages.json").is_file():
        what = "a worldwide (MetaCLIP 2) metadata folder" if p.is_dir() else \
            "the concatenated lists of a worldwide (MetaCLIP 2) match (languages.json beside it)"
        raise InputFileError(str(p), f"{what}: coverage counts one metadata list with MetaCLIP v1's matching, not "
                                     "each caption against its language's list; a worldwide pool's counts per entry "
                                     "are `curate metadata match`'s entry_counts table")
    return ConceptList(load_metadata(path), "metadata", str(path))


def from_file(path: str | os.PathLike) -> ConceptList:
    """A concept list file, one concept a line; ``#`` starts a comment line, blank lines are
    skipped. Accepted forms of a line:

    - a plain concept: ``golden retriever``;
    - an ImageNet synset line: ``n02099601 golden retriever, retriever`` (the first name);
    - a WordNet synset name: ``golden_retriever.n.01`` (``_`` as a space);
    - ``.csv``/``.tsv`` files: a header with a ``concept`` (or ``name``, ``class``) column,
      else the first column.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputFileError(str(p), "concept file not found") from None
    except OSError as e:
        raise InputFileError(str(p), f"cannot read concept file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputFileError(f"{p}:{line}", "not UTF-8 text") from None
    if p.suffix.lower() in (".csv", ".tsv"):
        rows = _delimited_rows(p, text, "\t" if p.suffix.lower() == ".tsv" else ",")
    else:
        rows = [(i, _plain_line(p, i, ln)) for i, ln in enumerate(text.splitlines(), start=1)
                if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise InputFileError(str(p), "no concepts in the file")
    names = [n for _, n in rows]
    _check_names(names, str(p), [f"line {i}" for i, _ in rows], with_line=True)
    return ConceptList(names, "file", str(p))


def _plain_line(p: Path, line: int, raw: str) -> str:
    s = raw.strip()
    m = _WNID_LINE.match(s)
    if m:
        s = m.group(1).split(",")[0].strip()
    else:
        m = _SYNSET_NAME.match(s)
        if m:
            s = m.group(1).replace("_", " ")
    if "\t" in s:
        raise InputFileError(f"{p}:{line}", f"a tab inside the concept {s!r} (one concept a line; "
                                            "use a .tsv file for columns)")
    return s


def _delimited_rows(p: Path, text: str, delimiter: str) -> list[tuple[int, str]]:
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    col, start = 0, 1
    for want in ("concept", "name", "class", "classname"):
        if want in header:
            col = header.index(want)
            break
    else:
        start = 0  # no header: every row is a concept, first column
    out = []
    for i, r in enumerate(rows[start:], start=start + 1):
        if not r or not any(c.strip() for c in r):
            continue
        if r[0].lstrip().startswith("#"):
            continue
        if col >= len(r):
            raise InputFileError(f"{p}:{i}", f"row has {len(r)} column(s); the concept column is number {col + 1}")
        out.append((i, _plain_line(p, i, r[col]) if r[col].strip() else ""))
    return out


def _check_names(names: list[str], where: str, places: list[str], with_line: bool = False) -> None:
    seen: dict[str, str] = {}
    for name, place in zip(names, places):
        loc = f"{where}:{place.split()[-1]}" if with_line else where
        what = "" if with_line else f"{place}: "
        if not name:
            raise InputFileError(loc, f"{what}empty concept")
        if len(name) > MAX_CONCEPT_CHARS:
            raise InputFileError(loc, f"{what}concept longer than {MAX_CONCEPT_CHARS} characters")
        if not can_match(name):
            marks = "".join(c for c in PUNCTS_TO_WRAP if c in name) or "a tab or newline"
            raise InputFileError(loc, f"{what}concept {name!r} holds {marks}, so no caption can match it "
                                      "(MetaCLIP spacing wraps , . ; : ? ! and the backtick)")
        if name in seen:
            raise InputFileError(loc, f"{what}concept {name!r} repeats {seen[name]}")
        seen[name] = place
