"""Reading ahead: an iterator's next items produced in a background thread.

A driver-side serial pass (the selection finish streaming sorted shards into one subset file)
spends its time in two halves that both release the GIL: Parquet's decoding (and, on a store,
waiting for ranged GETs) and the caller's numpy and Arrow work on what came before. One thread
doing the first beside the caller overlaps them. At most ``depth`` items wait, so memory stays
bounded by the items' size (a batch), not by the pass.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` in order, produced by one background thread at most ``depth`` items ahead of
    the caller. An error in the thread is raised at the caller's next item; a caller that stops
    early (``close()``, an exception, garbage collection) stops the thread at its next item."""
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
            put(_Failed(e))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()

