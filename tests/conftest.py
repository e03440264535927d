"""Shared fixtures: a local Spark session, the shared real data, a scratch dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


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
