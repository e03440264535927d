"""Progress display for long jobs (rich), quiet when output is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")
# Messages carry user data (captions, paths, names): printed as they are, never as rich markup.
console = Console(stderr=True, markup=False, emoji=False, highlight=False)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    items = list(items) if total is None else items
    total = len(items) if total is None else total  # type: ignore[arg-type]
    if not sys.stderr.isatty():
        yield from items
        return
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as p:
        tid = p.add_task(description, total=total)
        for x in items:
            yield x
            p.advance(tid)


def info(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)  # logs: never break lines
