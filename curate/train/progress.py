"""A live training line (step, samples seen, loss, samples/s, ETA), whatever ``--verbose`` says.

open_clip_train logs one line every ``--log-every-n-steps`` steps to ``RUN/out.log``::

    Train Epoch: 0 [ 512/4096 (12%)] Data (t): ... Batch (t): 0.41, 1245.3/s, 311.3/s/gpu LR: ... Contrastive_loss: 4.1 (4.3)

:class:`TrainProgress` follows that file while training runs (in this process or under torchrun:
only rank 0 writes it) and renders one updating rich line on a terminal; elsewhere (CI, a log
file, a pipe) it prints a plain line at most every ``every_s`` seconds, plus the first and the last.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

_LINE_RE = re.compile(r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<done>\d+)/(?P<per_epoch>\d+) \((?P<pct>\d+)%\)\]"
                      r".*?Batch \(t\): [0-9.]+, (?P<sps>[0-9.eE+-]+)/s")
_LOSS_RE = re.compile(r"(?P<name>[A-Za-z_]*[Ll]oss): (?P<val>[0-9.eE+-]+) \((?P<avg>[0-9.eE+-]+)\)")


@dataclass
class TrainPoint:
    """One progress line of open_clip_train, in run-wide terms."""

    step: int
    steps: int
    samples: int
    samples_total: int
    loss: float | None
    samples_per_s: float

    @property
    def eta_s(self) -> float | None:
        left = self.samples_total - self.samples
        return left / self.samples_per_s if self.samples_per_s > 0 else None

    def text(self) -> str:
        loss = f"{self.loss:.4f}" if self.loss is not None else "?"
        return (f"train: step {self.step}/{self.steps}, samples {self.samples:,}/{self.samples_total:,}, "
                f"loss {loss}, {self.samples_per_s:,.1f} samples/s, ETA {format_eta(self.eta_s)}")


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def parse_line(line: str, steps_per_epoch: int, global_batch: int, epochs: int) -> TrainPoint | None:
    """A :class:`TrainPoint` from one open_clip_train log line, or None for any other line."""
    m = _LINE_RE.search(line)
    if not m:
        return None
    epoch, done = int(m.group("epoch")), int(m.group("done"))
    per_epoch = steps_per_epoch * global_batch
    step_in_epoch = min(steps_per_epoch, max(1, round(done / max(1, global_batch))))
    losses = {x.group("name"): float(x.group("val")) for x in _LOSS_RE.finditer(line)}
    loss = losses.get("Contrastive_loss", next(iter(losses.values()), None))
    return TrainPoint(step=epoch * steps_per_epoch + step_in_epoch, steps=steps_per_epoch * epochs,
                      samples=epoch * per_epoch + step_in_epoch * global_batch, samples_total=per_epoch * epochs,
                      loss=loss, samples_per_s=float(m.group("sps")))


class TrainProgress:
    """Follow ``log_path`` from its current end in a thread while the ``with`` block runs."""

    def __init__(self, log_path: Path, steps_per_epoch: int, global_batch: int, epochs: int,
                 every_s: float = 10.0, poll_s: float = 0.5, stream=None, tty: bool | None = None):
        self.log_path = Path(log_path)
        self.plan = (steps_per_epoch, global_batch, epochs)
        self.every_s, self.poll_s = every_s, poll_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.last: TrainPoint | None = None
        self._printed: TrainPoint | None = None
        self._printed_at = 0.0
        self._stop = threading.Event()
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # a resumed run appends
        self._pending = ""
        self._first: tuple[float, int] | None = None  # (time, samples) of the first line seen
        self._thread: threading.Thread | None = None
        self._progress = None
        self._task = None

    def __enter__(self) -> "TrainProgress":
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      console=Console(file=self.stream), transient=False)
            self._task = self._progress.add_task("train: starting ...", total=None)
            self._progress.start()
        self._thread = threading.Thread(target=self._follow, name="train-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()  # whatever was written after the last poll
        if self._progress is not None:
            self._progress.stop()
        elif self.last is not None and self.last is not self._printed:
            self._print(self.last)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._read()

    def _read(self) -> None:
        if not self.log_path.exists():
            return
        with open(self.log_path, "r", errors="replace") as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset = f.tell()
        if not chunk:
            return
        lines = (self._pending + chunk).split("\n")
        self._pending = lines.pop()  # a line still being written
        for line in lines:
            point = parse_line(line, *self.plan)
            if point is not None:
                self._show(point)

    def _show(self, point: TrainPoint) -> None:
        # open_clip_train's samples/s is the last batch's; the run's average since the first line
        # seen gives a steadier rate and ETA
        now = time.monotonic()
        if self._first is None or point.samples <= self._first[1]:
            self._first = (now, point.samples)
        elif now - self._first[0] >= 1.0:
            point = replace(point, samples_per_s=(point.samples - self._first[1]) / (now - self._first[0]))
        self.last = point
        if self._progress is not None:
            self._progress.update(self._task, description=point.text(), total=point.steps, completed=point.step)
            return
        if self._printed is None or now - self._printed_at >= self.every_s:
            self._print(point)

    def _print(self, point: TrainPoint) -> None:
        self._printed, self._printed_at = point, time.monotonic()
        print(point.text(), file=self.stream, flush=True)
