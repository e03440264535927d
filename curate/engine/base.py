"""Executor interface and the in-process executor."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Protocol

TaskFn = Callable[[dict], dict]

_cache: dict[Any, Any] = {}
_cache_lock = threading.Lock()


def worker_cache(key: Any, factory: Callable[[], Any]) -> Any:
    """Object built once per Python worker process and reused across tasks and batches.

    Spark reuses Python workers between tasks (``spark.python.worker.reuse``), so a model
    or an Aho-Corasick automaton is built once per worker, not once per batch. The key must
    capture everything the object depends on (model name, checkpoint path, device...).
    """
    with _cache_lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


class Executor(Protocol):
    """Runs independent tasks; results come back in task order."""

    name: str

    def map_tasks(self, tasks: list[dict], fn: TaskFn, description: str = "") -> list[dict]: ...


class LocalExecutor:
    """Runs tasks one after another in this process, with a progress bar."""

    name = "local"

    def __init__(self, progress: bool = False):
        self.progress = progress

    def map_tasks(self, tasks: list[dict], fn: TaskFn, description: str = "") -> list[dict]:
        results = []
        it: Iterable[dict] = tasks
        if self.progress and tasks:
            from curate.progress import track

            it = track(tasks, description or "tasks")
        for t in it:
            results.append(fn(t))
        return results
