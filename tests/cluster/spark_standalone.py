"""A real Spark standalone cluster on 127.0.0.1, started from pyspark's own launcher.

One master and N workers (``spark-class org.apache.spark.deploy.{master.Master,worker.Worker}``),
each in its own process group so that a worker can be killed with everything it started
(executor JVM, Python workers), like a lost machine. Jobs go through ``spark-submit``.
Everything is stopped by process id: at teardown and, as a safety net, at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # 127.0.0.1 only
        return json.loads(r.read())


class StandaloneCluster:
    def __init__(self, workdir: Path, workers: int = 2, cores: int = 1, memory: str = "1g"):
        self.workdir = Path(workdir)
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.port, self.webui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []

    # ------------------------------------------------------------ environment
    def env(self, **extra) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_HOSTNAME": "127.0.0.1",
            "SPARK_LOG_DIR": str(self.workdir / "logs"),
            "SPARK_CONF_DIR": str(self.workdir / "conf"),  # empty: no stray spark-defaults.conf
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONHASHSEED": "0",
            "SPARK_DAEMON_MEMORY": "256m",
        })
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = open(self.workdir / "logs" / f"{name}.log", "wb")
        self._logs.append(log)
        return subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                start_new_session=True)  # own process group: killed as a unit

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180.0) -> "StandaloneCluster":
        for d in ("logs", "conf"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        self.master = self._spawn("master", [
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
            "--webui-port", str(self.webui)], self.env())
        self._wait(lambda s: s is not None, timeout, "master")
        for i in range(self.n_workers):
            self.workers.append(self._worker(i))
        self._wait_workers(timeout)
        return self

    def _worker(self, i: int) -> subprocess.Popen:
        work = self.workdir / f"worker-{i}"
        work.mkdir(exist_ok=True)
        return self._spawn(f"worker-{i}-{time.time_ns()}", [
            "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
            "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(work),
            "--webui-port", str(free_port())], self.env())

    def _wait_workers(self, timeout: float) -> None:
        self._wait(lambda s: s is not None and s.get("aliveworkers", 0) >= self.n_workers, timeout,
                   f"{self.n_workers} workers")

    def state(self) -> dict | None:
        """The master's JSON status (workers, apps), or None while it is not answering."""
        try:
            return _json(f"http://127.0.0.1:{self.webui}/json/")
        except (OSError, ValueError):
            return None

    def _wait(self, ok, timeout: float, what: str) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            for p in [self.master, *self.workers]:
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"spark {what}: a cluster process exited early; see {self.workdir / 'logs'}")
            if ok(self.state()):
                return
            time.sleep(0.5)
        raise TimeoutError(f"spark {what} not up after {timeout:.0f}s; see {self.workdir / 'logs'}")

    def kill_worker(self, i: int) -> None:
        """kill -9 worker ``i`` and everything it started (its executor and Python workers)."""
        _killpg(self.workers[i])

    def restart_worker(self, i: int, timeout: float = 180.0) -> None:
        """Replace a killed worker, so later tests again see the full cluster."""
        _killpg(self.workers[i])
        self.workers[i] = self._worker(i)
        self._wait_workers(timeout)

    def stop(self) -> None:
        for p in [*self.workers, self.master]:
            if p is not None:
                _killpg(p)
        for f in self._logs:
            f.close()
        self._logs.clear()

    # ------------------------------------------------------------ jobs
    def submit_cmd(self, job: str, args: list[str], conf: dict[str, str] | None = None) -> list[str]:
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.url,
               "--conf", "spark.executor.memory=768m", "--conf", "spark.driver.memory=768m",
               "--conf", "spark.ui.showConsoleProgress=false"]
        for k, v in (conf or {}).items():
            cmd += ["--conf", f"{k}={v}"]
        return cmd + [str(REPO / "jobs" / f"{job}.py"), *args]

    def submit(self, job: str, args: list[str], conf: dict[str, str] | None = None,
               timeout: float = 400) -> subprocess.CompletedProcess:
        """``spark-submit --master spark://... jobs/<job>.py ARGS`` (waits for it)."""
        return subprocess.run(self.submit_cmd(job, args, conf), capture_output=True, text=True,
                              env=self.env(), cwd=REPO, timeout=timeout)


def _killpg(p: subprocess.Popen) -> None:
    try:  # the whole group we created with start_new_session, even if its leader is gone
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
