"""curate train on shards written the way DataComp's resharder writes them: NNNNNNNN.tar,
NNNNNNNN_stats.json holding {"successes": n}, a meta.json of its arguments and counters,
sample_ids.npy, and no sizes.json."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from curate.train import train
from curate.train.runner import resolve_train_data

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), rgb).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def datacomp_output(tmp_path_factory):
    import webdataset as wds

    d = tmp_path_factory.mktemp("datacomp_reshard")
    names = list(COLOURS)
    per_shard = [16, 16, 5]  # --shard-size 16: the last shard is short
    uids, i = [], 0
    for s, n in enumerate(per_shard):
        with wds.TarWriter(str(d / f"{s:08d}.tar"), encoder=False) as w:
            for _ in range(n):
                uid = f"{i * 7919:032x}"
                c = names[i % 4]
                w.write({"__key__": f"{uid}-0", "jpg": _jpeg(COLOURS[c]), "txt": f"a {c} square".encode(),
                         "json": json.dumps({"uid": uid, "caption": f"a {c} square"}).encode()})
                uids.append(uid)
                i += 1
        (d / f"{s:08d}_stats.json").write_text(json.dumps({"successes": n}))  # written after each shard
    np.save(d / "sample_ids.npy", np.array([divmod(int(u, 16), 2**64) for u in uids], "u8,u8"))
    # resharder.py's meta.json: every argument as a string, then its counters
    (d / "meta.json").write_text(json.dumps({
        "input_dir": "/data/shards", "output_dir": str(d), "subset_file": "/data/subset.npy", "num_shards": "None",
        "shard_size": "16", "shard_format": "{:08d}.tar", "output_shard_format": "{:08d}.tar",
        "shard_stats_format": "{:08d}_stats.json", "output_shard_stats_format": "{:08d}_stats.json",
        "processed_count": 60, "output_count": 37, "blur_count": 0, "blur_time": 0,
        "output_shard_count": 3, "worker_success": 1, "cwd": "/data"}))
    return d


def test_sample_count_comes_from_the_stats_files(datacomp_output):
    assert not (datacomp_output / "sizes.json").exists()
    info = resolve_train_data(datacomp_output)
    assert (info["shards"], info["samples"]) == (3, 37)
    assert info["urls"].split("::") == [str(datacomp_output / f"{s:08d}.tar") for s in range(3)]


def test_without_meta_json_the_tars_and_stats_are_enough(datacomp_output, tmp_path):
    import shutil

    d = tmp_path / "bare"
    shutil.copytree(datacomp_output, d)
    (d / "meta.json").unlink()
    assert resolve_train_data(d)["samples"] == 37
    (d / "00000001_stats.json").unlink()  # a shard of unknown size: the total is unknown, not short
    assert resolve_train_data(d)["samples"] == 0


def test_training_on_datacomp_resharder_output_records_its_samples(datacomp_output, tmp_path):
    info = train(datacomp_output, tmp_path / "run", "tiny", seed=0, samples_seen=32, batch_size=16)
    assert info["data"]["samples"] == 37 and info["data"]["shards"] == 3
    assert info["passes_over_data"] == pytest.approx(32 / 37, abs=1e-3)
    recorded = json.loads((tmp_path / "run" / "train.json").read_text())
    assert recorded["data"]["samples"] == 37
