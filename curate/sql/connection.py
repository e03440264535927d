"""Read-only SQL over a dataset with DuckDB: the connection (views, limits, no writes), the
read-only check, and queries run under a time and memory limit."""

from __future__ import annotations

import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from curate import storage
from curate.errors import CurateError
from curate.sql.spill import MAX_SPILL_ENV, max_spill, spill_dir
from curate.sql.views import quote, table_views
from curate.tables import Dataset

DEFAULT_MEMORY_LIMIT = "50%"  # of this machine's RAM; DuckDB spills sorts and joins beyond it
DEFAULT_TIMEOUT_S = 600.0


def connect(dataset: Dataset | str | Path, memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
            max_spill_size: str | None = None, views: dict[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table; external writes disabled.

    ``memory_limit`` is DuckDB's (``4GB``, ``50%``); beyond it queries spill to a private
    temporary folder, up to ``max_spill_size`` (``curate.sql.spill.max_spill``), or fail with a
    one-line error. ``views`` (``table_views``'s, listed once by a driver for its tasks) saves
    listing the dataset again.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    con = duckdb.connect(":memory:")
    if ds.remote:
        # an object store is read through an fsspec filesystem registered with DuckDB (s3fs for
        # s3://), never a DuckDB extension (none can be downloaded); same URIs, same settings
        con.register_filesystem(storage.fsspec_filesystem(ds.location))
    for name, sql in (table_views(ds) if views is None else views).items():
        try:
            con.execute(f'CREATE VIEW "{name}" AS {sql}')
        except duckdb.Error as e:  # a damaged shard: the other tables stay queryable
            from curate.progress import info

            info(f"curate sql: table {name!r} left out: {str(e).splitlines()[0]} (a damaged shard: remove it "
                 "and run the job that wrote the table again)")
    _set(con, "memory_limit", memory_limit, "--memory-limit", "4GB, 512MB, 50%")
    _set(con, "max_temp_directory_size", max_spill(max_spill_size), "--max-spill", "20GB, 500MB")
    con.execute(f"SET temp_directory = {quote(spill_dir())}")
    con.execute("SET enable_progress_bar = false")  # its \r redraws end up in logs and piped stderr
    # Read-only: the dataset folder may be read, nothing else may be touched (no COPY ... TO,
    # no ATTACH, no other files), and the settings are then locked.
    con.execute(f"SET allowed_directories = [{quote(str(ds.root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _set(con: duckdb.DuckDBPyConnection, setting: str, value: str | None, option: str, examples: str) -> None:
    """A size setting; a value DuckDB does not read closes the connection with a one-line error."""
    if not value:
        return
    try:
        con.execute(f"SET {setting} = {quote(str(value))}")
    except duckdb.Error as e:
        con.close()
        raise CurateError(f"{option} {value!r} is not a size DuckDB understands "
                          f"(e.g. {examples}): {_first_line(e)}") from None


_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _view_hint(e: BaseException) -> str:
    """For a table named as a folder (``"subsets/bh"``, as `curate stats` lists it): its view's
    name (``subsets_bh``)."""
    import re

    from curate.sql.views import view_name

    m = re.search(r"Table with name (\S+) does not exist", str(e))
    if m and "/" in m.group(1):
        return f" (a table's view is named {view_name(m.group(1))}: SHOW TABLES lists them)"
    return ""


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Only SELECT-like statements (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) run."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise CurateError(f"SQL error: {_first_line(e)}") from e
    if not statements:
        raise CurateError("SQL error: no statement given")
    if len(statements) > 1:  # DuckDB would run them all and return the last one's rows only
        raise CurateError(f"SQL error: one statement at a time ({len(statements)} given, separated by ';')")
    for st in statements:
        if st.type not in _READ_ONLY:
            raise CurateError(f"curate sql is read-only: {st.type.name} statements are not allowed")


@contextmanager
def _interrupt_on_sigint(con: duckdb.DuckDBPyConnection, pressed: threading.Event) -> Iterator[None]:
    """Ctrl-C stops a running query. DuckDB holds the main thread in C++, where Python's own
    signal handler cannot run until the query ends; the signal's wakeup byte (written at C
    level) reaches a watcher thread at once, which interrupts the connection."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = socket.socketpair()
    w.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(w.fileno())
    except ValueError:  # not allowed here (e.g. no Python signal handling): plain run
        r.close(), w.close()
        yield
        return

    def watch() -> None:
        while True:
            try:
                data = r.recv(64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                pressed.set()
                con.interrupt()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        w.close()
        r.shutdown(socket.SHUT_RDWR)
        watcher.join(1)
        r.close()


@contextmanager
def limited(con: duckdb.DuckDBPyConnection, timeout: float | None = DEFAULT_TIMEOUT_S,
            memory_limit: str | None = DEFAULT_MEMORY_LIMIT) -> Iterator[None]:
    """Run the block's queries on ``con`` under ``timeout`` seconds (interrupted when it passes);
    DuckDB errors, the timeout and running out of memory become one-line ``CurateError``s,
    Ctrl-C a KeyboardInterrupt."""
    fired, pressed = threading.Event(), threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(timeout, stop) if timeout and timeout > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with _interrupt_on_sigint(con, pressed):
            yield
    except (duckdb.InterruptException, RuntimeError) as e:
        # an interrupt surfaces as InterruptException, or as RuntimeError("Query interrupted")
        # when it lands while a streamed result is being set up
        if not isinstance(e, duckdb.InterruptException) and not (pressed.is_set() or fired.is_set()):
            raise
        if pressed.is_set():
            raise KeyboardInterrupt from None
        if fired.is_set():
            raise CurateError(f"SQL stopped after {timeout:g} s (--timeout {timeout:g}); narrow the query "
                              f"or raise --timeout (0: no limit)") from None
        raise CurateError(f"SQL interrupted: {_first_line(e)}") from None
    except duckdb.OutOfMemoryException as e:
        if "max_temp_directory_size" in str(e):
            raise CurateError(f"SQL spilled more than --max-spill allows to its temporary folder; narrow the "
                              f"query or raise --max-spill / ${MAX_SPILL_ENV} ({_first_line(e)})") from None
        raise CurateError(f"SQL needs more memory than --memory-limit {memory_limit} allows; narrow the query "
                          f"or raise --memory-limit ({_first_line(e)})") from None
    except duckdb.Error as e:
        raise CurateError(f"SQL error: {_first_line(e)}{_view_hint(e)}") from None
    finally:
        if timer is not None:
            timer.cancel()


def query(dataset: Dataset | str | Path, sql: str, memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
          timeout: float | None = DEFAULT_TIMEOUT_S, max_spill_size: str | None = None) -> pa.Table:
    """Run one read-only SQL statement over the dataset's views; its result as Arrow."""
    con = connect(dataset, memory_limit=memory_limit, max_spill_size=max_spill_size)
    try:
        check_read_only(con, sql)
        with limited(con, timeout, memory_limit):
            return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def query_batches(dataset: Dataset | str | Path, sql: str, memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
                  timeout: float | None = DEFAULT_TIMEOUT_S, batch_rows: int = 65536,
                  max_spill_size: str | None = None) -> Iterator[pa.RecordBatch]:
    """The result of read-only SQL as a stream of record batches (never all rows in memory at once)."""
    con = connect(dataset, memory_limit=memory_limit, max_spill_size=max_spill_size)
    try:
        check_read_only(con, sql)
        with limited(con, timeout, memory_limit):
            only = con.extract_statements(sql)[0]  # one statement (check_read_only)
            reader = con.sql(only.query).to_arrow_reader(batch_rows)
            yield from reader
    finally:
        con.close()
