"""The driver JVM's class archive (curate/engine/jvm_archive.py): saved once at exit, mapped
by the next driver JVM, ignored when damaged, and never a line on a job's stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.engine import jvm_archive

# Starts the driver JVM, runs a shuffle, and reports what the JVM was given and mapped.
SESSION = """
import json, os
from curate.engine.spark_session import get_session
spark = get_session(master="local[2]")
rows = spark.range(1000).selectExpr("id % 3 AS g").groupBy("g").count().count()
jvm = spark.sparkContext._jvm
args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
pid = jvm.java.lang.ProcessHandle.current().pid()
maps = open(f"/proc/{pid}/maps").read() if os.path.exists(f"/proc/{pid}/maps") else ""
archive = os.environ["CURATE_JVM_ARCHIVE_DIR"]
print(json.dumps({"groups": rows, "args": [a for a in args if "Archive" in a],
                  "mapped": archive in maps}))
"""


def _run(archive_dir: Path, **env) -> tuple[dict, str]:
    full = {**os.environ, "CURATE_JVM_ARCHIVE_DIR": str(archive_dir), **env}
    r = subprocess.run([sys.executable, "-c", SESSION], capture_output=True, text=True, env=full, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout  # nothing from the JVM's CDS logging on stdout
    return json.loads(lines[0]), r.stderr


def _key_archive(archive_dir: Path) -> list[Path]:
    return sorted(p for p in archive_dir.glob("*.jsa") if not p.name.endswith(".tmp.jsa"))


@pytest.mark.slow
def test_saved_at_exit_then_mapped_by_the_next_jvm(tmp_path):
    first, err = _run(tmp_path)
    assert first["groups"] == 3 and any(a.startswith("-XX:ArchiveClassesAtExit=") for a in first["args"])
    assert "cds" not in err.lower() and "warning" not in err.lower(), err
    assert "Traceback" not in err, err  # the context stops before the JVM exits (an EOFError trace before)
    saved = _key_archive(tmp_path)
    assert len(saved) == 1 and saved[0].stat().st_size > 10_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved[0].name]  # no lock, no temporary left

    second, err = _run(tmp_path)
    assert second["groups"] == 3 and second["mapped"] is True
    assert second["args"][0] == f"-XX:SharedArchiveFile={saved[0]}"
    assert "cds" not in err.lower(), err


@pytest.mark.extended
def test_a_damaged_archive_is_ignored_quietly(tmp_path):
    key = jvm_archive.archive_key(_settings_of_session())
    (tmp_path / f"{key}.jsa").write_bytes(os.urandom(1 << 20))
    report, err = _run(tmp_path)
    assert report["groups"] == 3 and report["args"][0].startswith("-XX:SharedArchiveFile=")
    assert report["mapped"] is False
    assert "cds" not in err.lower() and "error" not in err.lower(), err


def _settings_of_session() -> dict[str, str]:
    from curate.engine.spark_session import _default_local_conf

    return _default_local_conf()


def test_off_switch_and_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_JVM_ARCHIVE_DIR", str(tmp_path))
    monkeypatch.setenv("CURATE_JVM_ARCHIVE", "0")
    plan = jvm_archive.plan(_settings_of_session())
    assert plan.java_options == "" and not plan.saves and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("CURATE_JVM_ARCHIVE", "1")
    for own in ("-Xshare:off", "-XX:SharedArchiveFile=/opt/app.jsa"):  # the user's own class sharing wins
        assert jvm_archive.plan({**_settings_of_session(), "spark.driver.extraJavaOptions": own}).java_options == ""
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))  # no java: run as before
    assert jvm_archive.plan(_settings_of_session()).java_options == ""


def test_one_process_saves_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_JVM_ARCHIVE_DIR", str(tmp_path))
    settings = _settings_of_session()
    first = jvm_archive.plan(settings)
    assert first.saves and "-XX:ArchiveClassesAtExit=" in first.java_options
    second = jvm_archive.plan(settings)  # the lock is held by a live process (this one)
    assert not second.saves and second.java_options == ""
    first.started(None)  # no JVM handle: the lock goes back
    assert jvm_archive.plan(settings).saves

    # A lock left by a process that died is taken over; so is one older than STALE_S.
    key = jvm_archive.archive_key(settings)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / f"{key}.lock").write_text(f"{socket.gethostname()} {dead.stdout.strip()} {time.time()}")
    assert jvm_archive.plan(settings).saves
    (tmp_path / f"{key}.lock").write_text(f"other-host 1 {time.time() - jvm_archive.STALE_S - 1}")
    assert jvm_archive.plan(settings).saves


def test_key_follows_what_the_archive_depends_on():
    base = _settings_of_session()
    key = jvm_archive.archive_key(base)
    assert key == jvm_archive.archive_key({**base, "spark.driver.extraJavaOptions": "-Dcurate.log.level=INFO "
                                                   "-Dlog4j2.configurationFile=file:/x"})
    assert key != jvm_archive.archive_key({**base, "spark.driver.extraClassPath": "/opt/extra.jar"})
    assert key != jvm_archive.archive_key({**base, "spark.driver.memory": "64g"})  # no compressed pointers
    assert key == jvm_archive.archive_key({**base, "spark.driver.memory": "8g"})


def test_archives_of_other_keys_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_JVM_ARCHIVE_DIR", str(tmp_path))
    now = time.time()
    for n in range(5):
        p = tmp_path / f"old{n}.jsa"
        p.write_bytes(b"x")
        os.utime(p, (now - 100 * n, now - 100 * n))
    dead_tmp = tmp_path / "k.host.1.tmp.jsa"
    dead_tmp.write_bytes(b"x")
    os.utime(dead_tmp, (now - jvm_archive.STALE_S - 1,) * 2)
    assert jvm_archive.plan(_settings_of_session()).saves
    left = sorted(p.name for p in tmp_path.glob("*.jsa"))
    assert left == ["old0.jsa", "old1.jsa", "old2.jsa"]  # the KEEP most recently used; the dead temporary gone


def test_the_same_jars_elsewhere_are_another_key(tmp_path, monkeypatch):
    """The JVM compares class paths: an archive saved with one virtualenv's pyspark is
    rejected by a JVM running another's, even with identical jars, so the key tells them apart."""
    from pyspark import find_spark_home

    real = Path(find_spark_home._find_spark_home()).resolve()
    (tmp_path / "jars").mkdir()
    for jar in (real / "jars").iterdir():
        with open(tmp_path / "jars" / jar.name, "wb") as f:
            f.truncate(jar.stat().st_size)  # same names, same sizes
    settings = _settings_of_session()
    key = jvm_archive.archive_key(settings)
    monkeypatch.setattr(find_spark_home, "_find_spark_home", lambda: str(tmp_path))
    assert jvm_archive.archive_key(settings) != key
    monkeypatch.setattr(find_spark_home, "_find_spark_home", lambda: str(real))
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert jvm_archive.archive_key(settings) != key
