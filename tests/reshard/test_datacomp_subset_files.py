"""reshard from DataComp subset files: imported by name, or read directly (raw memmap, unsorted)."""

from __future__ import annotations

import numpy as np

from curate.reshard import reshard
from curate.subset import write_subset
from curate.subset_import import import_subset

from .test_reshard import _samples


def _records(uids):
    return np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], "u8,u8")


def test_an_imported_or_raw_unsorted_datacomp_file_reshards_like_the_same_subset(download_dataset, tmp_path, capsys):
    ds, uids = download_dataset
    rows = sorted(uids[:12] + [uids[5], uids[5]])
    write_subset(ds, "ref", rows)
    ref = reshard(ds, "ref", output=tmp_path / "ref", shard_size=5)

    shuffled = list(rows)
    np.random.default_rng(0).shuffle(shuffled)
    raw = tmp_path / "picks.u8u8"  # np.memmap form, no header, unsorted
    _records(shuffled).tofile(raw)
    import_subset(ds, "dc", raw)
    by_name = reshard(ds, "dc", output=tmp_path / "by_name", shard_size=5)
    by_file = reshard(ds, subset_file=raw, output=tmp_path / "by_file", shard_size=5)
    assert "is not sorted" in capsys.readouterr().err

    expected = [(s, k, t, j["uid"], jpg) for s, k, t, j, jpg in _samples(tmp_path / "ref")]
    assert ref["counts"]["written"] == 13  # uid 3 failed to download; uid 5 three times
    for out, meta in (("by_name", by_name), ("by_file", by_file)):
        assert meta["counts"] == ref["counts"]
        got = [(s, k, t, j["uid"], jpg) for s, k, t, j, jpg in _samples(tmp_path / out)]
        assert got == expected
        assert (np.load(tmp_path / out / "sample_ids.npy") == _records(rows)).all()
