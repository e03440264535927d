"""Shared fixtures: a local Spark session, the shared real data, a scratch dataset; and how the
suite is split between the pytest-xdist workers of `make test`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# albumentations (imported by img2dataset) checks PyPI for a newer version unless told not to;
# curate.download.fetch says so before its import, and so must a test importing img2dataset first
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# tests talk to loopback only: a driver on a test cluster's master binds and advertises 127.0.0.1
# (curate leaves a cluster driver's address to Spark, which may pick another interface)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


# Hypothesis: no per-example deadline and no too-slow health check. Timing is never what a
# test asserts (speed lives in bench/), and under a loaded CI machine, or beside another xdist
# worker, a slow example would fail a property that holds.
settings.register_profile("curate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("curate")


# `make test` runs two pytest-xdist workers, ``-n 2 --dist loadfile --no-loadscope-reorder``:
# each file runs on one worker (its module-scoped fixtures are built once, its tests keep their
# order), and the files whose tests use the `standalone` cluster below share one worker, so only
# one cluster starts (a session fixture: a master, two workers, their JVMs). A file missing here
# still passes, on a second cluster of its own; collection warns about it.
STANDALONE_FILES = ("tests/cluster/test_standalone.py", "tests/faults/test_kill.py")


def _worker_group(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "spark-standalone" if path in STANDALONE_FILES else path


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the STANDALONE_FILES as one unit (xdist's own loadgroup marks do not
    reach the scheduler under pytest 9, whose node ids xdist can no longer suffix)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _worker_group(nodeid)

    return FileScheduling(config, log)


def pytest_configure(config):
    """Before any test (once, in the controlling process): the driver JVM's class archive,
    so that no test's process is the one that saves it at exit (curate/engine/jvm_archive.py;
    `make test` has done this already in scripts/setup.sh)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        from curate.engine import jvm_archive

        jvm_archive.warm()


def pytest_collection_modifyitems(config, items):
    """In an xdist worker, order the files longest-looking first (the standalone cluster's,
    then those with ``slow``/``cluster`` tests, then by test count; a file's own order is kept),
    so that no long file starts last while the other worker idles: with --no-loadscope-reorder
    xdist hands files out in this order. A plain run keeps pytest's own order."""
    uses_cluster = {i.nodeid.split("::", 1)[0] for i in items if "standalone" in getattr(i, "fixturenames", ())}
    for path in sorted(uses_cluster - set(STANDALONE_FILES)):
        warnings.warn(f"{path} uses the standalone cluster: add it to STANDALONE_FILES in tests/conftest.py "
                      "so that the xdist workers start one cluster, not two")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    group = {item: _worker_group(item.nodeid) for item in items}
    size: dict[str, int] = {}
    slow: set[str] = set()
    first: dict[str, int] = {}
    for n, item in enumerate(items):
        g = group[item]
        size[g] = size.get(g, 0) + 1
        first.setdefault(g, n)
        if item.get_closest_marker("slow") or item.get_closest_marker("cluster"):
            slow.add(g)
    items.sort(key=lambda item: (group[item] != "spark-standalone", group[item] not in slow,
                                 -size[group[item]], first[group[item]]))


@pytest.fixture(scope="session")
def spark():
    """One local-mode Spark session for the whole test run (2 cores, like CI)."""
    from curate.engine.spark import get_session

    session = get_session(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"}, app_name="curate-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real photos, captions, alt-text); tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tmp_dataset(tmp_path):
    from curate.tables import Dataset

    return Dataset(tmp_path / "dataset")


@pytest.fixture(scope="session")
def standalone(tmp_path_factory):
    """A real Spark standalone cluster on 127.0.0.1: a master and two 1-core workers started
    with pyspark's own launcher (tests/cluster/spark_standalone.py), stopped by process id."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "cluster"))
    from spark_standalone import StandaloneCluster

    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-standalone"), workers=2, cores=1, memory="1g")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
