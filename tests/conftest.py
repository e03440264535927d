"""Shared fixtures: a local Spark session, the shared real data, a scratch dataset; and how the
suite is split between pytest-xdist workers (`make test` runs ``-n 2 --dist loadgroup``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Each test's pytest-xdist group (used by ``--dist loadgroup``, harmless otherwise): its
    file, so a module-scoped fixture is built once and a file's tests keep their order; every
    file with a test on the standalone cluster shares one group, so only one worker starts that
    cluster (a session fixture: a master, two workers and their JVMs).

    In an xdist worker the groups are also ordered longest-looking first (the cluster group,
    then files with ``slow``/``cluster`` tests, then by test count), so that a long file does
    not start last while the other worker idles; `make test` passes ``--no-loadscope-reorder``
    so that xdist hands the groups out in this order. A plain run keeps pytest's own order."""
    on_cluster = {i.path for i in items if "standalone" in getattr(i, "fixturenames", ())}
    group = {}
    for item in items:
        group[item] = "spark-standalone" if item.path in on_cluster else str(item.path.relative_to(REPO))
        item.add_marker(pytest.mark.xdist_group(group[item]))
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    size: dict[str, int] = {}
    slow: set[str] = set()
    for item in items:
        size[group[item]] = size.get(group[item], 0) + 1
        if item.get_closest_marker("slow") or item.get_closest_marker("cluster"):
            slow.add(group[item])
    first = {g: i for i, g in reversed(list(enumerate(group[i] for i in items)))}

    def rank(g: str) -> tuple:
        return (g != "spark-standalone", g not in slow, -size[g], first[g])

    items.sort(key=lambda item: rank(group[item]))  # stable: a file's own order is kept


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
