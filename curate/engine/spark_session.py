"""The Spark session: building it (quiet by default), its logging, the driver JVM, what a task
was given (GPUs, cores), and task progress on the console. Part of ``curate.engine.spark``."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from curate.engine import jvm_archive
from curate.errors import EngineStartError

# ---------------------------------------------------------------- session
LOG4J2_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")

# Lines the JVM prints before any logger exists; dropped from the driver JVM's stderr unless
# verbose. The incubator line comes from Spark's launcher, which always adds
# --add-modules=jdk.incubator.vector; no JVM flag silences it.
JVM_NOISE = ("WARNING: Using incubator modules", "Using Spark's default log4j profile",
             "Setting default log level to", "To adjust logging level use sc.setLogLevel")


def verbose() -> bool:
    """``curate -v`` / ``CURATE_VERBOSE=1``: Spark's INFO logs on the console."""
    return os.environ.get("CURATE_VERBOSE", "") not in ("", "0", "false")


def under_spark_submit() -> bool:
    """True when this Python process was started by spark-submit (its JVM is our driver)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _log_level() -> str:
    return "INFO" if verbose() else os.environ.get("CURATE_SPARK_LOG_LEVEL", "WARN").upper()


def log4j_java_options() -> str:
    """JVM options that load curate's log4j2 configuration at the current level."""
    noise = " -Dcurate.noise.level=INFO" if verbose() else ""
    return f"-Dlog4j2.configurationFile=file:{LOG4J2_CONFIG} -Dcurate.log.level={_log_level()}{noise}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_local_conf() -> dict[str, str]:
    cores = os.cpu_count() or 2
    return {
        # Sized for a small machine: few shuffle partitions, Arrow on, quiet UI.
        "spark.sql.shuffle.partitions": str(max(2, cores * 2)),
        "spark.default.parallelism": str(max(2, cores)),
        "spark.driver.memory": os.environ.get("CURATE_DRIVER_MEMORY", "4g"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",
        # No web UI in local mode unless asked (--conf spark.ui.enabled=true or CURATE_SPARK_UI=1):
        # a laptop job is short, and a second job would probe ports 4040, 4041...
        "spark.ui.enabled": "true" if os.environ.get("CURATE_SPARK_UI") else "false",
        "spark.sql.adaptive.enabled": "false",  # deterministic partition counts for exact sharding
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }


def _launch_quiet_gateway(settings: dict[str, str]):
    """Start the driver JVM as pyspark would, but with its stderr piped through a filter that
    drops the start-up lines in ``JVM_NOISE`` (everything else passes unchanged). Its lines are
    held until the session has started (the returned ``release(said)``): a session that cannot
    start is one line, not Spark's stack traces. None when a JVM already runs here."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:
        return None
    conf = SparkConf(loadDefaults=False)
    for k, v in settings.items():
        conf.set(k, v)
    noise = tuple(n.encode() for n in JVM_NOISE)
    read_end, write_end = os.pipe()
    held: list[bytes] = []  # the JVM's lines until it has started: its reason when it does not
    lock, started = threading.Lock(), [False]

    def pump() -> None:
        # To file descriptor 2, as the JVM would write itself; never stop reading, or a full
        # pipe would block the JVM.
        with os.fdopen(read_end, "rb") as stream:
            for raw in iter(stream.readline, b""):
                if raw.startswith(noise):
                    continue
                with lock:
                    if not started[0]:
                        held.append(raw)
                        continue
                try:
                    os.write(2, raw)
                except OSError:
                    pass

    reader = threading.Thread(target=pump, name="spark-jvm-stderr", daemon=True)
    reader.start()
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": write_end})
    except Exception as e:  # noqa: BLE001 - the launcher exited: its own words say why (pyspark: only that it did)
        os.close(write_end)
        reader.join(timeout=5)
        raise EngineStartError(f"cannot start Spark ({settings.get('spark.master', 'local')}): "
                               f"{jvm_reason(b''.join(held).decode(errors='replace')) or e}") from None
    os.close(write_end)  # the JVM holds its own copy

    def release(said: bool) -> None:
        """Once the session started (``said``: its lines go out) or failed (they are the
        error's reason, said in one line): the JVM's lines pass through from now on."""
        with lock:
            started[0] = True
            for raw in held if said else ():
                try:
                    os.write(2, raw)
                except OSError:
                    pass
            held.clear()

    SparkContext._ensure_initialized(gateway=gateway)
    return release


def jvm_reason(text: str) -> str:
    """The message of the first Java exception in ``text`` (a launcher's stderr, a Py4J error),
    or its first ``Error:`` line: one line of what the JVM said, without its stack."""
    m = re.search(r"(?m)^(?:Exception in thread \"[^\"]*\" |: |Caused by: )?([\w.$]+(?:Exception|Error)): (.+)$", text)
    if m:
        return f"{m.group(2).strip()} ({m.group(1).rsplit('.', 1)[-1]})"
    m = re.search(r"(?m)^Error: (.+)$", text)
    return m.group(1).strip() if m else ""


def _apply_log_config(jvm, submitted) -> None:
    """Under spark-submit the driver JVM started before us with Spark's default logging (INFO):
    unless the user gave a log4j2 file, set curate's levels there once the session exists
    (Spark re-applies its defaults while the context starts), so the jobs' own logs are as
    quiet as a CLI run. The start-up lines before that remain: see docs/engine.md."""
    if "log4j2.configurationFile" in (submitted.get("spark.driver.extraJavaOptions") or ""):
        return
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    level = jvm.org.apache.logging.log4j.Level.toLevel
    # Levels set directly (what the file says): spark-submit's JVM already runs Spark's
    # default configuration, which a reload from Python does not reliably replace.
    configurator.setRootLevel(level(_log_level()))
    if not verbose():
        for name in ("org.apache.hadoop.util.NativeCodeLoader", "org.apache.spark.util.Utils",
                     "org.apache.spark.util.SparkNetworkUtils", "org.apache.spark.scheduler.TaskSetManager",
                     "org.apache.spark.scheduler.DAGScheduler", "org.apache.parquet"):
            configurator.setLevel(name, level("ERROR"))


def _driver_java_options(settings: dict[str, str]) -> jvm_archive.Plan | None:
    """Add to ``settings`` the driver JVM's options: curate's log4j2 configuration unless the
    user gave a file, and the class archive when this call starts the JVM (the archive's plan
    is returned then; None when a JVM already runs in this process)."""
    from pyspark import SparkContext

    java_opts = settings.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" not in java_opts:
        java_opts = f"{log4j_java_options()} {java_opts}".strip()
    archive = None
    if SparkContext._gateway is None:
        archive = jvm_archive.plan(settings)
        java_opts = f"{java_opts} {archive.java_options}".strip()
    settings["spark.driver.extraJavaOptions"] = java_opts
    return archive


def get_session(master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "curate"):
    """A SparkSession: ``master`` if given, else the one spark-submit set, else ``local[*]``.

    ``conf`` entries override our defaults, so any Spark setting passes through unchanged.
    Quiet by default (curate's log4j2.properties: WARN and above, no web UI in local mode);
    ``CURATE_VERBOSE=1`` (``curate -v``) brings the INFO logs back.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON") or _python())
    submit = under_spark_submit()
    if submit:
        # Started by spark-submit: attach to its JVM first, else SparkConf() cannot see the
        # settings spark-submit was given (--master, --conf) and we would fall back to local.
        from pyspark import SparkContext

        SparkContext._ensure_initialized()
    submitted = SparkConf()  # under spark-submit this already holds spark.master
    builder = SparkSession.builder.appName(app_name)
    settings = {}
    if master:
        settings["spark.master"] = master
    elif not submitted.contains("spark.master"):
        settings["spark.master"] = "local[*]"
    effective_master = settings.get("spark.master") or submitted.get("spark.master", "")
    if effective_master.startswith("local") and not submit:
        # a laptop job talks to itself only; on a cluster the executors call the driver back on
        # an address they can reach (Spark's own choice, or SPARK_LOCAL_IP / spark.driver.host)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    defaults = _default_local_conf()
    if not effective_master.startswith("local"):
        defaults = {k: v for k, v in defaults.items() if not k.startswith("spark.driver.") and k != "spark.ui.enabled"}
    for k, v in defaults.items():
        if not submitted.contains(k):
            settings[k] = v
    settings.update(conf or {})
    ui_on = settings.get("spark.ui.enabled", submitted.get("spark.ui.enabled", "true")).lower() == "true"
    if ui_on and "spark.ui.port" not in settings and not submitted.contains("spark.ui.port"):
        settings["spark.ui.port"] = str(_free_port())  # no "could not bind on port 4040" probing
    archive, release = None, None
    if not submit:
        archive = _driver_java_options(settings)
        if not verbose():
            release = _launch_quiet_gateway(settings)
    for k, v in settings.items():
        builder = builder.config(k, v)
    handler = signal.getsignal(signal.SIGINT)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # noqa: BLE001 - a bad master URL or setting, a master that does not answer
        if release is not None:
            release(False)
        raise EngineStartError(f"cannot start Spark on {effective_master or 'local'}: {_start_reason(e)}") from None
    else:
        if release is not None:
            release(True)
    finally:
        if archive is not None:  # also when the session failed: the lock is given back
            from pyspark import SparkContext

            archive.started(getattr(SparkContext._gateway, "proc", None))
    if getattr(handler, "keep_over_spark", False):  # the CLI's Ctrl-C handling stays (pyspark replaces it)
        signal.signal(signal.SIGINT, handler)
    if submit:
        _apply_log_config(spark.sparkContext._jvm, submitted)
    if verbose() or "CURATE_SPARK_LOG_LEVEL" in os.environ:
        spark.sparkContext.setLogLevel(_log_level())
    return spark


def _start_reason(e: Exception) -> str:
    said = jvm_reason(str(e)) or " ".join(str(e).split())[:300] or type(e).__name__
    if "stopped SparkContext" in said:  # what Spark says once it gave up on the master
        said += "; the master did not answer (is it running, at that address and port?)"
    return said


def context_running() -> bool:
    """Whether this process has a running Spark context (read without importing pyspark)."""
    import sys

    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    return context is not None and getattr(context.SparkContext, "_active_spark_context", None) is not None


def kill_driver_jvm() -> None:
    """SIGKILL the Spark JVM this process started, if any (the CLI's Ctrl-C: no shutdown noise;
    every committed shard stays, as after kill -9, and a rerun resumes)."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is not None and proc.poll() is None:
        proc.kill()


def activate(spark) -> None:
    """Make ``spark`` this thread's active session, for libraries that look it up with
    ``SparkSession.getActiveSession()`` (img2dataset's pyspark distributor)."""
    from pyspark.sql import SparkSession

    SparkSession._activeSession = spark
    SparkSession._get_j_spark_session_class(spark._jvm).setActiveSession(spark._jsparkSession)


def task_resource_addresses(name: str = "gpu") -> list[str]:
    """Addresses of resource ``name`` (e.g. GPU ordinals) assigned to the running Spark task;
    empty outside a task or when the task has none (``spark.task.resource.gpu.amount``)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    info = ctx.resources().get(name)
    return list(info.addresses) if info is not None else []


def task_cpus() -> int | None:
    """CPU cores the running Spark task was given (``spark.task.cpus``); None outside a task."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    ctx = TaskContext.get()
    if ctx is None:
        return None
    try:
        return int(ctx.cpus())
    except Exception:  # noqa: BLE001 - older pyspark without TaskContext.cpus
        return None


def _python() -> str:
    import sys

    return sys.executable


def ui_url(spark) -> str | None:
    return spark.sparkContext.uiWebUrl


# ---------------------------------------------------------------- progress
class _StageProgress:
    """Shows Spark task progress (done / total, rate) while a job runs on the driver."""

    def __init__(self, spark, description: str, total: int, unit: str = "tasks"):
        self.sc = spark.sparkContext
        self.description, self.total, self.unit = description, total, unit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        import sys

        if sys.stderr.isatty() and self.total > 0:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from curate.progress import console

        tracker = self.sc.statusTracker()
        t0 = time.time()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
                      transient=True) as p:
            tid = p.add_task(self.description, total=self.total, rate="")
            while not self._stop.wait(0.5):
                done = 0
                for sid in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(sid)
                    if info:
                        done = max(done, info.numCompletedTasks)
                rate = done / max(time.time() - t0, 1e-9)
                p.update(tid, completed=min(done, self.total), rate=f"{rate:.1f} {self.unit}/s")

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
