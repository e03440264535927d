"""Concept lists: the accepted line forms, and bad lines rejected with one line naming file and line."""

from __future__ import annotations

import pytest

from curate.coverage.concepts import from_eval_folder, from_file, from_metadata
from curate.errors import InputFileError


def test_plain_synset_and_wordnet_lines(tmp_path):
    f = tmp_path / "concepts.txt"
    f.write_text("# ImageNet-style and WordNet-style lines mix with plain ones\n"
                 "golden retriever\n\n"
                 "n01440764 tench, Tinca tinca\n"
                 "hot_dog.n.01\n"
                 "  New York  \n")
    c = from_file(f)
    assert c.names == ["golden retriever", "tench", "hot dog", "New York"]
    assert c.kind == "file" and c.describe()["concepts"] == 4


def test_csv_with_and_without_header(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("id,concept\n1,dog\n2,cat\n\n3,zebra crossing\n")
    assert from_file(f).names == ["dog", "cat", "zebra crossing"]
    g = tmp_path / "c.tsv"
    g.write_text("dog\tanimal\ncat\tanimal\n")
    assert from_file(g).names == ["dog", "cat"]


@pytest.mark.parametrize("name, text, line, words", [
    ("comma.txt", "dog\ncat\nbird, small\n", 3, "holds ,"),
    ("dot.txt", "dog\nU.S. flag\n", 2, "holds ."),
    ("tab.txt", "dog\n\ncat\tanimal\n", 3, "a tab inside"),
    ("dup.txt", "dog\ncat\n# c\ndog\n", 4, "repeats line 1"),
    ("long.txt", "dog\n" + "x" * 201 + "\n", 2, "longer than 200"),
    ("empty.csv", "concept,n\ndog,1\n,2\n", 3, "empty concept"),
    ("short.csv", "n,concept\n1,dog\n2\n", 3, "row has 1 column"),
])
def test_bad_lines_name_file_and_line(tmp_path, name, text, line, words):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(InputFileError) as e:
        from_file(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:{line}: ") and words in msg and "\n" not in msg


def test_not_utf8_names_the_line(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("dog\ncat\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputFileError, match=rf"^{f}:3: not UTF-8 text$"):
        from_file(f)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputFileError, match="concept file not found"):
        from_file(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("# only a comment\n\n")
    with pytest.raises(InputFileError, match="no concepts"):
        from_file(tmp_path / "blank.txt")


def test_eval_folder_class_names(tmp_path):
    for c in ("red_circle", "blue_square", "cat"):
        (tmp_path / "ev" / c).mkdir(parents=True)
    c = from_eval_folder(tmp_path / "ev")
    assert c.names == ["blue square", "cat", "red circle"] and c.labels == ["blue_square", "cat", "red_circle"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no class sub-folders"):
        from_eval_folder(tmp_path / "empty")


def test_metadata_entries_as_is(tmp_path):
    f = tmp_path / "metadata.json"
    f.write_text('["dog", "U.S.", "dog", "cat"]')
    c = from_metadata(f)  # MetaCLIP's list as is: repeats and unmatchable entries keep their ids
    assert c.names == ["dog", "U.S.", "dog", "cat"] and c.kind == "metadata"


def test_worldwide_metadata_is_refused_not_counted_as_one_list(tmp_path):
    """A worldwide folder failed as 'is a directory'; a worldwide dataset's concatenation counted
    every caption against every language's list with v1 spacing (201,458 matches where
    entry_counts had 28,432)."""
    folder = tmp_path / "meta_ww"
    folder.mkdir()
    (folder / "en.json").write_text('["dog"]')
    with pytest.raises(InputFileError, match="a worldwide \\(MetaCLIP 2\\) metadata folder: coverage counts one"):
        from_metadata(folder)
    copy = tmp_path / "metaclip"
    copy.mkdir()
    (copy / "metadata.json").write_text('["dog", "Hund"]')
    (copy / "languages.json").write_text('{"ranges": []}')
    with pytest.raises(InputFileError, match="concatenated lists of a worldwide .*entry_counts"):
        from_metadata(copy / "metadata.json")
