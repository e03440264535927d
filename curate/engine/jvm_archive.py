"""A class-data-sharing archive for the local driver JVM: most of a short Spark job's fixed
cost is the JVM loading and verifying some 20,000 classes (Spark, Hadoop, Scala). JDK 13+
can save the classes a run loaded to a file at exit (``-XX:ArchiveClassesAtExit``) and map
them at the next start (``-XX:SharedArchiveFile``): the session starts and runs its first
action about 5 s faster on a 2-core machine (docs/engine.md, "Start-up").

Only the driver JVM that curate launches itself uses it (not under spark-submit, not the
executors of a cluster). It changes how classes load, never what a job computes. The JVM
checks the archive against its own build and class path and ignores one that does not
match, silently (``-Xshare:auto``, CDS logging off), and runs without class sharing (the
JDK's own default archive included: its ~1,300 core classes are a small part, and such a
start measured no slower than one without an archive), so a stale or damaged file costs
the time it would have saved; the key below is precise so that this stays rare. ``CURATE_JVM_ARCHIVE=0`` turns it off;
``CURATE_JVM_ARCHIVE_DIR`` moves it from ``~/.cache/curate/jvm``.

The first run without an archive for its key (java build, Spark jars, class path, heap
mode) saves one as its JVM exits: the Python side closes the gateway's stdin at exit,
waits for the JVM to write the file under a temporary name, and renames it into place, so
readers only ever see a complete archive. One process per key does this (a lock file); the
others run as before.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import socket
import sys
import time
from pathlib import Path

# Silences the JVM's CDS messages (on stdout): a mismatched archive, a signed jar it skips.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
STALE_S = 15 * 60  # a lock or temporary file older than this belongs to a run that died
KEEP = 3  # archives for other keys (an older Spark, another JDK) kept, most recently used first
EXIT_WAIT_S = 180  # the JVM needs ~20 s to write the archive on a 2-core machine


def enabled() -> bool:
    return os.environ.get("CURATE_JVM_ARCHIVE", "1").lower() not in ("0", "false", "no", "off")


def archive_dir() -> Path:
    base = os.environ.get("CURATE_JVM_ARCHIVE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "curate" / "jvm"


def _java_binary() -> str | None:
    # As Spark's launcher (bin/spark-class) picks it.
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(found) if found and os.path.exists(found) else None


def _heap_bytes(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    text = text.strip().lower().rstrip("b")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
    except ValueError:
        return 0


def archive_key(settings: dict[str, str]) -> str | None:
    """What the archive depends on: the java build, Spark's jars (where they are, their names
    and sizes), any extra class path, the user's JVM options and whether the heap allows
    compressed pointers (over 32 GiB it does not, and the JVM would reject an archive saved
    the other way). None when no java or Spark home is found (then pyspark fails on its own,
    with its own message)."""
    java = _java_binary()
    try:
        from pyspark.find_spark_home import _find_spark_home

        jars = Path(_find_spark_home()).resolve() / "jars"
        listing = sorted((p.name, p.stat().st_size) for p in jars.iterdir())
    except Exception:  # noqa: BLE001 - no Spark home: nothing to key on
        return None
    if java is None:
        return None
    st = os.stat(java)
    opts = settings.get("spark.driver.extraJavaOptions", "")
    # The log4j options carry a level and a path that do not touch class loading.
    opts = " ".join(o for o in opts.split() if not o.startswith(("-Dlog4j2.", "-Dcurate.")))
    # The class path as Spark's launcher builds it: the jars' own path counts (the JVM
    # compares paths: a copy of the same jars elsewhere, e.g. another virtualenv, does not
    # match), and so do the folders and extra entries it adds from the environment.
    launcher_env = [os.environ.get(v, "") for v in ("SPARK_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR",
                                                    "SPARK_DIST_CLASSPATH", "SPARK_PREPEND_CLASSES")]
    parts = [java, str(st.st_mtime_ns), str(st.st_size), str(jars), repr(listing), *launcher_env,
             settings.get("spark.driver.extraClassPath", ""), settings.get("spark.jars", ""),
             settings.get("spark.jars.packages", ""), opts,
             "big-heap" if _heap_bytes(settings.get("spark.driver.memory", "1g")) >= 32 * 2**30 else "coops"]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _lock_is_stale(lock: Path) -> bool:
    try:
        host, pid, started = lock.read_text().split()
        if time.time() - float(started) > STALE_S:
            return True
        if host == socket.gethostname():
            os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        # Unreadable or half-written: stale once old enough.
        try:
            return time.time() - lock.stat().st_mtime > STALE_S
        except OSError:
            return True


def _take_lock(lock: Path) -> bool:
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _lock_is_stale(lock):
                return False
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()} {time.time()}")
        return True
    return False


def _tidy(directory: Path, key: str) -> None:
    """Drop temporary files of runs that died, and archives of other keys beyond KEEP."""
    now = time.time()
    for p in directory.glob("*.tmp.jsa"):
        try:
            if now - p.stat().st_mtime > STALE_S:
                p.unlink()
        except OSError:
            pass
    others = []
    for p in directory.glob("*.jsa"):
        if not p.name.endswith(".tmp.jsa") and p.stem != key:
            try:
                others.append((p.stat().st_mtime, p))
            except OSError:
                pass
    for _, p in sorted(others, reverse=True)[KEEP:]:
        try:
            p.unlink()
        except OSError:
            pass


class Plan:
    """What to add to the driver's JVM options, and, when this run saves the archive, what
    to do once the gateway is up (``started``)."""

    def __init__(self, java_options: str = "", final: Path | None = None, temporary: Path | None = None,
                 lock: Path | None = None):
        self.java_options, self.final, self.temporary, self.lock = java_options, final, temporary, lock

    @property
    def saves(self) -> bool:
        return self.temporary is not None

    def started(self, proc) -> None:
        """The driver JVM ``proc`` is running: save its archive when this process exits."""
        if not self.saves:
            return
        if proc is None:  # no process handle: the JVM cannot be asked to exit; give the lock back
            self._release()
            return
        atexit.register(self._save_at_exit, proc)

    def _save_at_exit(self, proc) -> None:
        try:
            if proc.poll() is None:
                if sys.stderr.isatty():  # on a console only: a job's logged stderr stays its own
                    sys.stderr.write("curate: saving the Spark JVM's class archive for faster start-up "
                                     f"(once, about 20 s; {self.final.parent})\n")
                    sys.stderr.flush()
                _stop_context()  # else the accumulator server's reader meets the JVM's exit: an EOFError trace
                try:
                    proc.stdin.close()  # the gateway exits when its stdin closes
                except (OSError, ValueError, AttributeError):
                    pass
                try:
                    proc.wait(timeout=EXIT_WAIT_S)
                except Exception:  # noqa: BLE001 - took too long: leave it, keep no archive
                    proc.kill()
            if proc.returncode == 0 and self.temporary.is_file() and self.temporary.stat().st_size > 0:
                os.replace(self.temporary, self.final)
        except OSError:
            pass
        finally:
            try:
                self.temporary.unlink()
            except OSError:
                pass
            self._release()

    def _release(self) -> None:
        try:
            self.lock.unlink()
        except OSError:
            pass


def _stop_context() -> None:
    """Stop this process's Spark context, if one runs (its accumulator server with it)."""
    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    sc = getattr(getattr(context, "SparkContext", None), "_active_spark_context", None)
    if sc is not None:
        with contextlib.suppress(Exception):  # exiting anyway; the archive is what matters here
            sc.stop()


def plan(settings: dict[str, str]) -> Plan:
    """The archive options for a driver JVM started with ``settings``: use the archive when
    one exists for this key, else save one at exit if no other process is saving it."""
    own = settings.get("spark.driver.extraJavaOptions", "")
    if not enabled() or any(flag in own for flag in ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")):
        return Plan()  # off, or the user set class sharing up themselves
    key = archive_key(settings)
    if key is None:
        return Plan()
    directory = archive_dir()
    final = directory / f"{key}.jsa"
    if final.is_file():
        try:
            os.utime(final)  # most recently used, for _tidy
        except OSError:
            pass
        return Plan(f"{_option('SharedArchiveFile', final)} {QUIET}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = directory / f"{key}.lock"
        if not _take_lock(lock):
            return Plan()
        _tidy(directory, key)
    except OSError:  # a read-only home: run without
        return Plan()
    temporary = directory / f"{key}.{socket.gethostname()}.{os.getpid()}.tmp.jsa"
    return Plan(f"{_option('ArchiveClassesAtExit', temporary)} {QUIET}", final, temporary, lock)


def _option(name: str, path: Path) -> str:
    # Spark splits extraJavaOptions as a shell would: quote a path with spaces.
    text = f"-XX:{name}={path}"
    return f'"{text}"' if any(c.isspace() for c in text) else text


def default_archive() -> Path | None:
    """Where the archive for a default local session (``curate <job>`` with no --conf) is,
    or would be; None when there is no key (no java or Spark home)."""
    from curate.engine.spark_session import _default_local_conf

    key = archive_key(_default_local_conf())
    return archive_dir() / f"{key}.jsa" if key else None


def warm() -> Path | None:
    """Save the archive for a default local session now, if missing (``make setup`` and the
    test suite call this, so no later run pays the ~20 s save at its exit)."""
    import subprocess

    path = default_archive()
    if not enabled() or path is None or path.is_file():
        return path
    subprocess.run([sys.executable, "-m", "curate.engine.jvm_archive"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path if path.is_file() else None


def _exercise() -> None:
    """A small job touching the classes most jobs load: Arrow batches through Python
    workers, a shuffle, a sort, Parquet written and read back."""
    import tempfile

    from curate.engine.spark_session import get_session

    spark = get_session(app_name="curate-jvm-archive")

    def same(batches):
        yield from batches

    with tempfile.TemporaryDirectory() as tmp:
        df = spark.range(20000).mapInArrow(same, "id long")
        counts = df.groupBy((df.id % 7).alias("g")).count()
        counts.join(df.withColumnRenamed("id", "g"), "g", "left_semi").orderBy("g") \
            .write.mode("overwrite").parquet(os.path.join(tmp, "t"))
        spark.read.parquet(os.path.join(tmp, "t")).toArrow()
    spark.stop()


if __name__ == "__main__":
    _exercise()
