"""Progress arithmetic (rate over a recent window, ETA) and the terminal progress bar."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TextIO

from django.core.management.base import OutputWrapper

from backfills.models import BackfillRun


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    rows: int


class RateWindow:
    """Rows per second over the last `window` seconds of samples."""

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self.samples: deque[Sample] = deque()

    def add(self, rows: int, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        self.samples.append(Sample(now, rows))
        while len(self.samples) > 2 and now - self.samples[1].at >= self.window:
            self.samples.popleft()

    @property
    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        first, last = self.samples[0], self.samples[-1]
        elapsed = last.at - first.at
        return (last.rows - first.rows) / elapsed if elapsed > 0 else None


class SmoothedRate:
    """Rows per second, exponentially smoothed with a time constant of `window` seconds, so
    it follows the recent batches whatever their size or pace."""

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self.value: float | None = None
        self._last: float | None = None

    def start(self, at: float | None = None) -> None:
        self._last = time.monotonic() if at is None else at

    def add(self, rows: int, at: float | None = None) -> float | None:
        now = time.monotonic() if at is None else at
        if self._last is None:
            self._last = now
            return self.value
        elapsed = now - self._last
        self._last = now
        if elapsed <= 0:
            return self.value
        instant = rows / elapsed
        if self.value is None:
            self.value = instant
        else:
            weight = 1 - math.exp(-elapsed / self.window)
            self.value += weight * (instant - self.value)
        return self.value


def eta(rows_done: int, rows_total: int | None, rate: float | None) -> timedelta | None:
    if not rows_total or not rate or rate <= 0:
        return None
    return timedelta(seconds=round(max(0, rows_total - rows_done) / rate))


def render_bar(run: BackfillRun, rate: float | None, width: int = 30) -> str:
    fraction = run.progress
    if fraction is None:
        bar, percent = "?" * width, "   ?  "
    else:
        filled = int(fraction * width)
        bar, percent = "#" * filled + "." * (width - filled), f"{fraction:6.1%}"
    total = f"{run.rows_total:,}" if run.rows_total is not None else "?"
    speed = f"{rate:,.0f} rows/s" if rate is not None else "– rows/s"
    remaining = eta(run.rows_processed, run.rows_total, rate)
    eta_text = f"ETA {remaining}" if remaining is not None and not run.is_finished else ""
    return (
        f"[{bar}] {percent}  {run.rows_processed:,}/{total} rows  {speed}  {eta_text}  {run.status}"
    ).rstrip()


class ProgressWatcher:
    """Polls a run's row and draws a progress bar until the run finishes."""

    def __init__(
        self,
        run_id: int,
        out: OutputWrapper | TextIO,
        *,
        interval: float = 0.5,
        line_interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.run_id = run_id
        self.out = out
        self.interval = interval
        # Without a terminal (logs, CI) print a line every few seconds instead of redrawing.
        self.interactive = bool(getattr(out, "isatty", lambda: False)())
        self.line_interval = line_interval
        self.sleep = sleep
        self.rates = RateWindow()

    def _emit(self, text: str) -> None:
        if isinstance(self.out, OutputWrapper):
            self.out.write(text, ending="")
        else:
            self.out.write(text)
        self.out.flush()

    def wait(self) -> BackfillRun:
        last_line_at = 0.0
        while True:
            run = BackfillRun.objects.get(pk=self.run_id)
            self.rates.add(run.rows_processed)
            line = render_bar(run, self.rates.rate)
            now = time.monotonic()
            if self.interactive:
                self._emit(f"\r\x1b[2K{line}")
            elif run.is_finished or now - last_line_at >= self.line_interval:
                self._emit(line + "\n")
                last_line_at = now
            if run.is_finished:
                if self.interactive:
                    self._emit("\n")
                return run
            self.sleep(self.interval)
