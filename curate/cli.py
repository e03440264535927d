"""The ``curate`` command. Each subcommand lives in its own module in ``curate/commands/``
and registers itself there (``register(app)``), so adding a capability touches no other file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer

from curate.errors import CurateError

app = typer.Typer(
    name="curate",
    help="Curate web image-text pools into CLIP training sets: ingest, download, embed, "
    "filter, dedup, balance, select, reshard, train, evaluate, report. "
    "Every job runs on Spark (local mode by default; --master for a cluster).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _load_commands() -> None:
    import curate.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"curate.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_load_commands()


def _user_message(exc: BaseException) -> str | None:
    """A CurateError's message, also when it crossed a Spark worker boundary."""
    if isinstance(exc, CurateError):
        return str(exc)
    text = str(exc)
    for marker in ("InputFileError: ", "SchemaError: ", "DatasetError: ", "CurateError: "):
        if marker in text:
            tail = text.split(marker, 1)[1]
            return tail.strip().splitlines()[0]
    return None


def main(argv: list[str] | None = None) -> None:
    """Console entry point; ``argv`` lets ``jobs/*.py`` call a subcommand directly."""
    os.environ.setdefault("PYTHONHASHSEED", "0")
    try:
        app(args=argv, prog_name="curate", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # turn known user errors into one clear line
        msg = _user_message(exc)
        if msg is None:
            raise
        print(f"curate: error: {msg}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
