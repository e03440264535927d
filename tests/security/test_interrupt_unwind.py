"""Ctrl-C without Spark: the KeyboardInterrupt unwinds so ``finally`` blocks tidy up, but a
library's thread pool can wait forever in its ``__exit__`` (img2dataset's, in-process, for a
worker blocked on a semaphore): the process exits 130 once a grace period ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


STUCK = """
import contextlib, os, signal, sys, threading
from curate.cli import _on_interrupt, cli_errors
signal.signal(signal.SIGINT, _on_interrupt)
never = threading.Event()
worker = threading.Thread(target=never.wait)  # as img2dataset's pool thread, blocked on a semaphore
worker.start()
with cli_errors():
    with contextlib.redirect_stderr(open(os.devnull, "w")):  # as training silences open_clip
        try:
            print("ready", flush=True)
            never.wait()
        finally:
            worker.join()  # a pool's __exit__ waiting for that thread: the unwinding never ends
"""


def test_ctrl_c_exits_even_when_the_unwinding_stalls_and_says_so_past_a_silenced_stderr(tmp_path):
    """The KeyboardInterrupt's unwinding may wait forever in a library's thread pool: the
    process exits 130 once the grace period ends; its line reaches the real stderr even while
    a job points sys.stderr at /dev/null."""
    proc = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=dict(os.environ, CURATE_INTERRUPT_UNWIND_SECONDS="1"))
    assert proc.stdout.readline().strip() == b"ready"
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - t0 < 30
    assert err.decode().splitlines() == ["curate: interrupted; rerun the same command to resume"]


TERMINATED_WHILE_WRITING = """
import sys, time
from curate.cli import main
sys.argv = ["curate", "select", sys.argv[1], "--sql", "SELECT uid FROM samples", "--name", "s"]
import curate.sql.select as sel
def slow(*args, **kwargs):
    print("ready", flush=True)
    time.sleep(120)
sel.select_sql = slow
main(sys.argv[1:])
"""


def test_sigterm_stops_a_command_with_one_line_and_143_and_the_next_writer_says_it_did_not_finish(tmp_path):
    """A scheduler's SIGTERM (preemption) ends the command as Ctrl-C does, with its own line and
    128 + 15; its lock line is left unfinished, so the next writer warns about its tables."""
    from curate.cli import main

    src = tmp_path / "p.csv"
    src.write_text("url,text\nhttp://127.0.0.1/a.jpg,a cat\n")
    ds = tmp_path / "ds"
    try:
        main(["ingest", str(src), "-o", str(ds), "--engine", "local"])
    except SystemExit as e:
        assert e.code == 0
    proc = subprocess.Popen([sys.executable, "-c", TERMINATED_WHILE_WRITING, str(ds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ, CURATE_INTERRUPT_UNWIND_SECONDS="5"))
    assert proc.stdout.readline().strip() == b"ready"
    os.killpg(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.decode().splitlines()[-1] == "curate: terminated (SIGTERM); rerun the same command to resume"
    done = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(src), "-o", str(ds), "--engine", "local"],
                          capture_output=True, text=True, timeout=120, check=False)  # another job: it says so
    assert done.returncode == 0 and "did not finish: `curate select" in done.stderr
