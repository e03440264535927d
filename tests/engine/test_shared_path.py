"""On a cluster master the executors must see the dataset folder at the driver's path: checked
before the job, one line naming the hosts that do not (curate/engine/shared_path.py)."""

from __future__ import annotations

import shutil

import pytest

from curate.engine import LocalExecutor
from curate.engine.shared_path import check_shared_path
from curate.errors import EngineStartError


class OwnDisk(LocalExecutor):
    """Tasks that run where the dataset path is another folder: a node's own disk."""

    def __init__(self, driver_root, node_root, writes_lost=False):
        super().__init__()
        self.driver_root, self.node_root, self.writes_lost = str(driver_root), str(node_root), writes_lost

    def map_tasks(self, tasks, fn, description=""):
        out = []
        for t in tasks:
            if self.writes_lost:  # the node reads a copy of the probe, writes to its own disk
                own = t["folder"].replace(self.driver_root, self.node_root)
                shutil.copytree(t["folder"], own, dirs_exist_ok=True)
                t = {**t, "folder": own}
            else:
                t = {**t, "folder": t["folder"].replace(self.driver_root, self.node_root)}
            out.append(fn(t))
        return out


def test_a_folder_every_task_sees_passes_and_leaves_nothing(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    check_shared_path(LocalExecutor(), str(ds), 4)
    assert list(ds.iterdir()) == []


def test_executors_that_cannot_read_or_whose_writes_the_driver_misses_are_one_line(tmp_path):
    ds, node = tmp_path / "ds", tmp_path / "node-disk"
    ds.mkdir()
    with pytest.raises(EngineStartError, match=r"^executors on \S+ cannot read .*/ds: on a cluster the dataset must "
                                               r"be one shared path"):
        check_shared_path(OwnDisk(ds, node), str(ds), 3)
    with pytest.raises(EngineStartError, match=r"write files the driver does not see in .*/ds"):
        check_shared_path(OwnDisk(ds, node, writes_lost=True), str(ds), 3)
    assert list(ds.iterdir()) == []  # the probe is gone either way
