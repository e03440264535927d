"""External DataComp subset files (apply_filter.py's u8,u8 .npy, or the same records without a
header) imported with ``curate select --from-file`` and then used as any subset: SQL view,
recipe input, reshard."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest

from curate.cli import main
from curate.recipe import load_recipe, run_recipe
from curate.sql import query
from curate.subset import read_subset, read_subset_manifest
from curate.subset_import import import_subset
from curate.subset_records import hex_uids, records_from_hex, sorted_chunks

U16 = np.dtype("u8,u8")


def _records(uids: list[str]) -> np.ndarray:
    """DataComp's own conversion (apply_filter.py): each hex uid split into two uint64."""
    return np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], U16)


def _cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


@pytest.fixture
def picks(pool):
    """Every 3rd sample, one of them twice (DataComp subsets may repeat a uid)."""
    uids = sorted(pool.read("samples")["uid"].to_pylist())[::3]
    return sorted(uids + [uids[4]])


@pytest.mark.parametrize("form", ["npy", "raw"])
def test_import_then_use_as_sql_view_recipe_input_and_subset(pool, picks, tmp_path, form, capsys):
    arr = _records(picks)
    f = tmp_path / "picks.npy"
    if form == "npy":
        np.save(f, arr)
    else:
        arr.tofile(f)  # np.memmap form: no header, 16 bytes per uid
    code, out, err = _cli(["select", str(pool.root), "--from-file", str(f), "--name", "dc"], capsys)
    assert code == 0, err
    assert f"subset dc: {len(picks)} uids ({len(picks) - 1} distinct) from {f} ({form})" in out
    assert read_subset(pool, "dc") == picks
    stored = np.load(pool.root / "subsets" / "dc" / "uids.npy")
    assert stored.dtype == U16 and (stored == arr).all()
    man = read_subset_manifest(pool, "dc")
    assert (man["format"], man["sorted_input"], man["count"], man["distinct"]) == (form, True, len(picks), len(picks) - 1)
    # the SQL view, a recipe starting from it, and reading it back as a file
    assert query(pool, "SELECT count(*) AS n FROM subsets_dc").column("n")[0].as_py() == len(picks)
    r = tmp_path / "r.yaml"
    r.write_text(f"name: fromdc\ndataset: {pool.root}\ninput: subset:dc\noutput: dc_nospam\nstages:\n"
                 f"  - kind: sql\n    query: SELECT uid FROM samples WHERE text NOT LIKE 'spam%'\n")
    run_recipe(load_recipe(r), engine="local", quiet=True)
    samples = pool.read("samples")
    spam = {u for u, t in zip(samples["uid"].to_pylist(), samples["text"].to_pylist()) if t.startswith("spam")}
    assert set(read_subset(pool, "dc_nospam")) == {u for u in picks if u not in spam}
    assert read_subset(f) == picks


def test_an_unsorted_file_is_reported_and_stored_sorted(pool, picks, tmp_path, capsys):
    shuffled = list(picks)
    np.random.default_rng(1).shuffle(shuffled)
    f = tmp_path / "unsorted.bin"
    _records(shuffled).tofile(f)
    code, out, err = _cli(["select", str(pool.root), "--from-file", str(f), "--name", "dc"], capsys)
    assert code == 0, err
    assert "is not sorted" in err and "DataComp's resharder" in err
    assert read_subset(pool, "dc") == picks
    assert not read_subset_manifest(pool, "dc")["sorted_input"]
    assert read_subset(f) == picks  # a subset file read directly (reshard --subset-file) is sorted too
    assert "is not sorted" in capsys.readouterr().err


def test_chunked_sort_through_bucket_files_equals_an_in_memory_sort(tmp_path):
    rng = np.random.default_rng(7)
    n = 5000
    arr = np.empty(n, U16)
    arr["f0"] = rng.integers(0, 2**63, n, dtype=np.uint64) * 2 + 1
    arr["f1"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    arr[100:110] = arr[5]  # repeats, and equal high halves with different low ones
    arr["f0"][200:210] = arr["f0"][6]
    chunks = list(sorted_chunks(arr, tmp_path / "work", chunk_rows=300))
    assert len(chunks) > 1 and not any((tmp_path / "work").iterdir())  # bucket files removed
    got = np.concatenate(chunks)
    assert (got == np.sort(arr, order=["f0", "f1"])).all()
    assert hex_uids(got).to_pylist() == sorted(f"{int(a):016x}{int(b):016x}" for a, b in arr)
    assert (records_from_hex(hex_uids(arr)) == arr).all()


def test_a_large_unsorted_import_streams_in_chunks(tmp_path):
    from curate.tables import Dataset

    rng = np.random.default_rng(3)
    arr = np.empty(4000, U16)
    arr["f0"], arr["f1"] = rng.integers(0, 2**64, 4000, dtype=np.uint64), rng.integers(0, 2**64, 4000, dtype=np.uint64)
    f = tmp_path / "big.npy"
    np.save(f, arr)
    ds = Dataset(tmp_path / "ds")
    ds.root.mkdir()
    info = import_subset(ds, "big", f, chunk_rows=256)  # no samples table: nothing to check uids against
    assert info["count"] == info["distinct"] == 4000 and not info["sorted_input"]
    assert (np.load(ds.root / "subsets" / "big" / "uids.npy") == np.sort(arr, order=["f0", "f1"])).all()
    assert read_subset(ds, "big") == sorted(hex_uids(arr).to_pylist())
    assert [p.name for p in (ds.root / "subsets").iterdir()] == ["big"]  # no temp folders left


def test_unknown_uids_fail_unless_allowed(pool, picks, tmp_path, capsys):
    stranger = "f" * 32
    f = tmp_path / "mixed.npy"
    np.save(f, _records(sorted(picks + [stranger, stranger])))
    code, _, err = _cli(["select", str(pool.root), "--from-file", str(f), "--name", "dc"], capsys)
    assert code == 2 and "2 uids are not in samples" in err and stranger in err
    assert not (pool.root / "subsets" / "dc").exists()
    code, out, err = _cli(["select", str(pool.root), "--from-file", str(f), "--name", "dc", "--allow-unknown"], capsys)
    assert code == 0, err
    assert "2 unknown dropped" in out
    assert read_subset(pool, "dc") == picks
    assert (np.load(pool.root / "subsets" / "dc" / "uids.npy") == _records(picks)).all()
    assert read_subset_manifest(pool, "dc")["counts"] == {"file_rows": len(picks) + 2, "unknown_uid": 2,
                                                           "selected": len(picks)}


def test_the_check_against_samples_is_done_by_engine_tasks_alike(pool, picks, tmp_path, spark, monkeypatch):
    """The unknown-uid check runs as the engine's tasks, one uid range of samples each (the
    driver reads neither samples nor the subset): with many ranges, unknown uids below, among
    and above the pool's (one repeated), Spark and the in-process engine give the same error,
    and with ``allow_unknown`` the same files as a file holding only the known uids."""
    from curate.engine import LocalExecutor
    from curate.engine.spark import SparkExecutor
    from curate.errors import DatasetError
    from curate.sql import ranges

    monkeypatch.setattr(ranges, "RANGE_ROWS", 7)  # samples cut into many ranges
    strangers = ["0" * 32, picks[5][:31] + ("0" if picks[5][31] != "0" else "1"), "f" * 32, "f" * 32]
    strangers = [u for u in strangers if u not in pool.read("samples")["uid"].to_pylist()]
    assert len(strangers) == 4
    mixed, clean = tmp_path / "mixed.npy", tmp_path / "clean.npy"
    np.save(mixed, _records(sorted(picks + strangers)))
    np.save(clean, _records(picks))
    files = {}
    for name, ex in (("local", LocalExecutor()), ("spark", SparkExecutor(spark))):
        with pytest.raises(DatasetError) as e:
            import_subset(pool, f"dc_{name}", mixed, executor=ex)
        assert f"4 uids are not in samples of {pool.root} (first: {'0' * 32})" in str(e.value), name
        assert not (pool.root / "subsets" / f"dc_{name}").exists()
        tasks_before = ex.driver_counter.by_call.get("map_tasks", 0)
        out = import_subset(pool, f"dc_{name}", mixed, allow_unknown=True, executor=ex)
        assert ex.driver_counter.by_call["map_tasks"] - tasks_before > 3, name  # one result per range
        assert out["counts"] == {"file_rows": len(picks) + 4, "unknown_uid": 4, "selected": len(picks)}
        files[name] = {f: (pool.root / "subsets" / f"dc_{name}" / f).read_bytes() for f in ("uids.parquet", "uids.npy")}
        assert not list((pool.root / "_tmp").glob("import-*")) if (pool.root / "_tmp").exists() else True
    import_subset(pool, "dc_clean", clean)
    want = {f: (pool.root / "subsets" / "dc_clean" / f).read_bytes() for f in ("uids.parquet", "uids.npy")}
    assert files["local"] == files["spark"] == want


def _bad_files(tmp_path, picks):
    good = _records(picks)
    files = {}

    def save(name, arr):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], arr)

    save("int64", np.arange(10, dtype=np.int64))
    save("hex_strings", np.array(picks))
    save("u4_pairs", np.zeros(4, "u4,u4"))
    save("big_endian", good.astype(">u8,>u8"))
    save("two_d", np.stack([good, good]))
    files["pickled"] = tmp_path / "pickled.npy"
    np.save(files["pickled"], np.array([{"uid": picks[0]}], dtype=object), allow_pickle=True)
    files["truncated"] = tmp_path / "truncated.npy"
    np.save(files["truncated"], good)
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:-20])
    files["bad_header"] = tmp_path / "bad_header.npy"
    files["bad_header"].write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': nonsense" + b" " * 40)
    files["raw_odd_size"] = tmp_path / "odd.bin"
    files["raw_odd_size"].write_bytes(good.tobytes()[:-3])
    files["raw_empty"] = tmp_path / "empty.bin"
    files["raw_empty"].write_bytes(b"")
    files["pickle_not_npy"] = tmp_path / "uids.pkl"
    data = pickle.dumps(picks)
    files["pickle_not_npy"].write_bytes(data + b"\0" * (-len(data) % 16))
    files["text_uids"] = tmp_path / "uids.txt"  # 32 lines of 33 bytes: a multiple of 16
    files["text_uids"].write_text("".join(f"{u}\n" for u in (picks * 32)[:32]))
    files["missing"] = tmp_path / "nowhere.npy"
    return files


@pytest.mark.parametrize("case,needle", [
    ("int64", "dtype int64 is not DataComp's u8,u8"),
    ("hex_strings", "is not DataComp's u8,u8"),
    ("u4_pairs", "is not DataComp's u8,u8"),
    ("big_endian", "is not DataComp's u8,u8"),
    ("two_d", "a subset is a 1-D array"),
    ("pickled", "not a readable .npy subset"),
    ("truncated", "not a readable .npy subset"),
    ("bad_header", "not a readable .npy subset"),
    ("raw_odd_size", "not a multiple of 16"),
    ("raw_empty", "empty file"),
    ("text_uids", "a text list of uids, not a DataComp subset"),
    ("missing", "subset file not found"),
])
def test_bad_subset_files_are_one_line_errors(pool, picks, tmp_path, capsys, case, needle):
    f = _bad_files(tmp_path, picks)[case]
    code, _, err = _cli(["select", str(pool.root), "--from-file", str(f), "--name", "dc"], capsys)
    assert code == 2 and needle in err and str(f) in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (pool.root / "subsets" / "dc").exists()


def test_a_pickle_that_happens_to_have_a_multiple_of_16_bytes_is_read_as_raw_records(pool, picks, tmp_path, capsys):
    """DataComp's resharder memmaps any file without the .npy magic; so does curate. Such a
    file's records are then arbitrary uids, which the samples check catches."""
    f = _bad_files(tmp_path, picks)["pickle_not_npy"]
    assert f.stat().st_size % 16 == 0
    code, _, err = _cli(["select", str(pool.root), "--from-file", str(f), "--name", "dc"], capsys)
    assert code == 2 and "are not in samples" in err


def test_a_curate_subset_from_another_dataset_imports_too(pool, picks, tmp_path, capsys):
    from curate.subset import write_subset
    from curate.tables import Dataset

    other = Dataset(tmp_path / "other")
    write_subset(other, "mine", list(reversed(picks)))
    for src in (other.root / "subsets" / "mine", other.root / "subsets" / "mine" / "uids.parquet"):
        code, out, err = _cli(["select", str(pool.root), "--from-file", str(src), "--name", "copied"], capsys)
        assert code == 0 and "(parquet)" in out, err
        assert read_subset(pool, "copied") == picks
        assert sorted(p.name for p in (pool.root / "subsets" / "copied").iterdir()) == [
            "_manifest.json", "uids.npy", "uids.parquet"]
    bad = tmp_path / "bad.parquet"
    pa.parquet.write_table(pa.table({"uid": picks[:3] + ["NOT-A-UID"]}), bad)
    code, _, err = _cli(["select", str(pool.root), "--from-file", str(bad), "--name", "x"], capsys)
    assert code == 2 and f"{bad}: row 3: 'NOT-A-UID' is not a 32-char lowercase hex uid" in err
    pa.parquet.write_table(pa.table({"id": picks[:3]}), bad)
    code, _, err = _cli(["select", str(pool.root), "--from-file", str(bad), "--name", "x"], capsys)
    assert code == 2 and "needs a string column 'uid'" in err


def test_select_needs_exactly_one_source(pool, tmp_path, capsys):
    code, _, err = _cli(["select", str(pool.root), "--name", "dc"], capsys)
    assert code == 2 and "exactly one of --sql QUERY or --from-file PATH" in err
    f = tmp_path / "x.npy"
    np.save(f, np.zeros(0, U16))
    code, _, err = _cli(["select", str(pool.root), "--name", "dc", "--from-file", str(f), "--sql", "SELECT 1"], capsys)
    assert code == 2 and "exactly one" in err
    code, out, err = _cli(["select", str(pool.root), "--name", "empty", "--from-file", str(f)], capsys)
    assert code == 0 and read_subset(pool, "empty") == [] and json.loads(
        (pool.root / "subsets" / "empty" / "_manifest.json").read_text())["count"] == 0
    assert len(np.load(pool.root / "subsets" / "empty" / "uids.npy")) == 0
    assert pa.types.is_string(query(pool, "SELECT * FROM subsets_empty").schema.field("uid").type)
