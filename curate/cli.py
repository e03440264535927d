"""The ``curate`` command. Each subcommand lives in its own module in ``curate/commands/``
and registers itself there (``register(app)``), so adding a capability touches no other file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import typer
from typer.core import TyperGroup

from curate.errors import CurateError

try:  # typer carries its own copy of click; its usage errors are that copy's classes
    from typer._click import exceptions as click_exceptions
except ImportError:  # a typer that uses click itself
    from click import exceptions as click_exceptions

# The top-level help's panels, in a pool's order through curate; every command has a place
# (tests/engine/test_cli_startup.py), so a new one is placed on purpose.
HELP_PANELS = {
    "Build a dataset": ("ingest", "download", "embed"),
    "Curate": ("filter", "dedup", "metadata", "cluster", "prune", "decontaminate", "coverage", "scorer", "select",
               "run"),
    "Train and evaluate": ("reshard", "train", "eval", "report"),
    "Inspect": ("stats", "sql", "models", "stages"),
    "Try it": ("demo",),
}
_HELP_ORDER = {name: i for i, name in enumerate(n for names in HELP_PANELS.values() for n in names)}


class _WorkflowGroup(TyperGroup):
    """Lists its commands in ``HELP_PANELS``' order (typer lists them as they were registered:
    by module name, groups last)."""

    def list_commands(self, ctx):
        return sorted(super().list_commands(ctx), key=lambda n: _HELP_ORDER.get(n, len(_HELP_ORDER)))


app = typer.Typer(
    name="curate",
    cls=_WorkflowGroup,
    help="Curate web image-text pools into CLIP training sets: ingest, download, embed, "
    "filter, dedup, balance, select, reshard, train, evaluate, report. "
    "Small pools run in-process, larger ones on Spark (--engine auto; --master for a cluster).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# A top-level command in a module's source: ``app.command("name"`` or ``app.add_typer(x, name="name"``.
_TOP_LEVEL_COMMAND = re.compile(r"""\bapp\.(?:command\(\s*|add_typer\(\s*\w+\s*,\s*name=)["']([\w-]+)["']""")
_registered: set[str] = set()


def _command_modules() -> dict[str, list[str]]:
    """Top-level command name -> the command modules defining it, read from their source
    without importing them (a command's imports are paid only when it runs)."""
    import curate.commands as pkg

    out: dict[str, list[str]] = {}
    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        try:
            source = (Path(pkg.__path__[0]) / f"{mod.name}.py").read_text(encoding="utf-8")
        except OSError:  # a package or a compiled module: found only by loading everything
            continue
        for name in _TOP_LEVEL_COMMAND.findall(source):
            out.setdefault(name, []).append(mod.name)
    return out


def _load_commands(modules: list[str] | None = None) -> None:
    """Register the commands of ``modules`` (default: every module in curate/commands/)."""
    import curate.commands as pkg

    if modules is None:
        modules = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in modules:
        if name in _registered:
            continue
        _registered.add(name)
        module = importlib.import_module(f"curate.commands.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    panel = {name: title for title, names in HELP_PANELS.items() for name in names}
    for entry in [*app.registered_commands, *app.registered_groups]:
        entry.rich_help_panel = panel.get(entry.name)


def _modules_for(argv: list[str]) -> list[str] | None:
    """The command modules ``argv`` needs: the one defining its command (the first word that is
    not an option), or None (all: top-level help, an unknown command, an unusual layout)."""
    words = [a for a in argv if not a.startswith("-")]
    return _command_modules().get(words[0]) if words else None


def _print_version(value: bool) -> None:
    if value:
        from curate.manifest import code_version

        v = code_version()  # the commit too, from a git checkout: what a bug report needs
        commit = f" (git {v['git_commit'][:12]}{', modified' if v.get('git_dirty') else ''})" if "git_commit" in v else ""
        typer.echo(f"curate {v['curate']}{commit}, Python {v['python']}")
        raise typer.Exit()


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Show Spark's INFO logs (quiet by default: WARN and above)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print curate's version (and git commit) and exit."),
) -> None:
    if verbose:
        os.environ["CURATE_VERBOSE"] = "1"  # read by curate.engine.spark.get_session



# The last line of a Python traceback names the exception by its qualified class:
# "curate.errors.RecipeError: recipe.yaml:3: ...". A Spark worker's error reaches the
# driver only as such text (inside a PythonException or Py4JJavaError message).
_TRACEBACK_ERROR = re.compile(r"^\s*(curate(?:\.\w+)+)\.(\w+): (.*)$", re.MULTILINE)

INTERRUPTED = "interrupted; rerun the same command to resume"


def _curate_error_class(module: str, name: str) -> type | None:
    """The CurateError subclass ``module.name`` names, or None (any other class or module)."""
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except Exception:  # a module that no longer imports here: not a class we can vouch for
        return None
    return cls if isinstance(cls, type) and issubclass(cls, CurateError) else None


def _user_message(exc: BaseException) -> str | None:
    """A CurateError's message, also when it crossed a Spark worker boundary.

    Across the boundary the class is matched by its qualified name in the traceback text and
    resolved to a real class, so every CurateError subclass is carried, wherever it is defined.
    """
    if isinstance(exc, CurateError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    found = None
    for module, name, message in _TRACEBACK_ERROR.findall(str(exc)):
        if _curate_error_class(module, name) is not None:
            found = message.strip()  # the last one is the error the worker ended with
    return found


def _interrupt_message(signum: int | None = None) -> str:
    """Ctrl-C's line (SIGTERM's: a scheduler stopping the job), or why the dataset lock's renewal
    stopped this process (another writer took the lock over: rerunning now would not resume, it
    would meet that writer)."""
    lock = sys.modules.get("curate.object_lock")
    lost = lock.lost_message() if lock is not None else None
    if lost:
        return f"error: {lost}"
    return TERMINATED if signum == signal.SIGTERM else INTERRUPTED


TERMINATED = "terminated (SIGTERM); rerun the same command to resume"
_signal_received = [signal.SIGINT]  # the signal that is stopping the command


def _exit_status() -> int:
    """128 + the signal's number, as a shell reports a process the signal ended: 130 for
    Ctrl-C, 143 for SIGTERM."""
    return 128 + int(_signal_received[0])


def _on_terminate(signum, frame) -> None:
    """SIGTERM (a scheduler preempting the job, ``kill``): as Ctrl-C, with its own line and 143,
    so the Spark JVM is stopped and a store's lock object deleted rather than left to its lease."""
    _signal_received[0] = signal.SIGTERM
    _on_interrupt(signum, frame)


def _on_interrupt(signum, frame) -> None:
    """Ctrl-C: one line, exit 130. Without Spark a KeyboardInterrupt unwinds, so ``finally``
    blocks tidy up (typer turns it into exit 130). With a Spark JVM running, unwinding would
    interleave py4j and JVM shutdown noise: SIGKILL the JVM and exit at once. Every write is
    atomic, so this leaves what kill -9 leaves: committed shards that the rerun skips."""
    global _interrupted
    if not _interrupted:
        _interrupted = True
        # a job that silences a library's output (training) points stderr at /dev/null: this
        # line is the user's, so it goes to the process's own stderr then
        out = sys.__stderr__ if getattr(sys.stderr, "name", None) == os.devnull and sys.__stderr__ else sys.stderr
        out.write(f"curate: {_interrupt_message(signum)}\n")
        out.flush()
    engine = sys.modules.get("curate.engine.spark")  # loaded only once a job opened Spark
    if engine is None or not engine.context_running():
        _exit_if_unwinding_stalls()
        raise KeyboardInterrupt
    try:
        engine.kill_driver_jvm()
    finally:
        _release_locks_at_exit()
        os._exit(_exit_status())


# seconds the unwinding of a KeyboardInterrupt may take (``finally`` blocks tidying up) before
# the process exits as a kill -9 would: a library's thread pool can wait forever in its own
# ``__exit__`` for a worker blocked on a semaphore (img2dataset's, in-process)
UNWIND_SECONDS = float(os.environ.get("CURATE_INTERRUPT_UNWIND_SECONDS", "10"))
_watchdog: threading.Thread | None = None


def _exit_if_unwinding_stalls() -> None:
    global _watchdog
    if _watchdog is not None:
        return

    def watch() -> None:
        time.sleep(UNWIND_SECONDS)
        _release_locks_at_exit()  # what is left is what kill -9 leaves; the rerun resumes
        os._exit(_exit_status())

    _watchdog = threading.Thread(target=watch, name="curate-interrupt-watchdog", daemon=True)
    _watchdog.start()


def _release_locks_at_exit() -> None:
    """Before ``os._exit``: a dataset lock held on an object store is deleted (a local flock
    goes with the process), so the next writer, from any host, need not wait for its lease."""
    lock = sys.modules.get("curate.lock")
    if lock is not None:
        with suppress(Exception):  # exiting anyway; a lock left behind is taken over once stale
            lock.release_all()


_on_interrupt.keep_over_spark = True  # curate.engine.spark.get_session puts it back over pyspark's
_on_interrupt.says_lost_lock = True  # its line names the writer that took the dataset lock over
_interrupted = False


@contextmanager
def cli_errors() -> Iterator[None]:
    """What the CLI does with an exception: a user error (a CurateError, also from a Spark
    worker) becomes one line and exit 2, Ctrl-C one line and exit 130; anything else is a bug
    and keeps its traceback."""
    global _interrupted
    try:
        yield
    except KeyboardInterrupt:
        if not _interrupted:
            print(f"curate: {_interrupt_message()}", file=sys.stderr)
        _interrupted = False
        status = _exit_status()
        _signal_received[0] = signal.SIGINT
        sys.exit(status)
    except click_exceptions.NoArgsIsHelpError as exc:  # a group or command given nothing: its help
        exc.show()
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:  # a usage error: one line, as every other error
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"curate: error: {' '.join(exc.format_message().split())}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, EOFError):  # click turns an EOFError raised anywhere into a bare Abort
            msg = _user_message(cause)
            print(f"curate: error: {msg or f'unexpected end of a file or input (EOFError: {cause})'}", file=sys.stderr)
            sys.exit(2)
        sys.exit(1)
    except Exception as exc:
        msg = _user_message(exc)
        if msg is None:
            raise
        global _stopped_on_user_error
        _stopped_on_user_error = True
        print(f"curate: error: {msg}", file=sys.stderr)
        sys.exit(2)


_stopped_on_user_error = False  # the command ended on a user error: it said why, as a finished one does


def main(argv: list[str] | None = None) -> None:
    """Console entry point; ``argv`` lets ``jobs/*.py`` call a subcommand directly."""
    global _interrupted, _stopped_on_user_error
    os.environ.setdefault("PYTHONHASHSEED", "0")
    _interrupted = _stopped_on_user_error = False
    _signal_received[0] = signal.SIGINT
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_interrupt) if main_thread else None
    previous_term = signal.signal(signal.SIGTERM, _on_terminate) if main_thread else None
    returned = False
    try:
        with cli_errors():
            _load_commands(_modules_for(sys.argv[1:] if argv is None else list(argv)))
            # not standalone: click's usage errors come here as exceptions, to be one line
            code = app(args=argv, prog_name="curate", standalone_mode=False)
            if _interrupted:  # typer turned the signal's KeyboardInterrupt into a 130: not finished
                code = _exit_status()
            else:
                returned = True
            sys.exit(code if isinstance(code, int) else 0)  # as standalone click ends: SystemExit
    finally:
        from curate.lock import release_command_locks

        # in-process callers (tests, notebooks) run the next command freely; an interrupted or
        # crashed command's writes are not marked finished, so the next writer says so
        try:
            release_command_locks(finished=returned or _stopped_on_user_error)
        except CurateError as e:  # the store went away: the command has said what it did; one more line
            print(f"curate: warning: {e}; the next writer takes the lock over once its lease runs out",
                  file=sys.stderr)
        if main_thread:  # and get their Ctrl-C and SIGTERM handlers back
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous_term if previous_term is not None else signal.SIG_DFL)


if __name__ == "__main__":
    main()
