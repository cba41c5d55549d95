"""How fast a run goes: adaptive batch size, a rows-per-second cap, the backfill's own
`throttle()` hook, and a PostgreSQL health check that holds batches while the database is
struggling."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)

#: Largest growth of the batch size in one step, and largest shrink (as GitLab's batched
#: migrations do: grow slowly, back off fast).
MAX_GROWTH = 1.2
MAX_SHRINK = 0.5


class BatchSizer:
    """Adapts the batch size so that batches take about `target_seconds`."""

    def __init__(
        self, initial: int, target_seconds: float | None, minimum: int, maximum: int
    ) -> None:
        self.size = max(minimum, min(initial, maximum))
        self.target = target_seconds
        self.minimum = minimum
        self.maximum = maximum
        self._smoothed: float | None = None

    def record(self, rows: int, seconds: float) -> int:
        """The size to use next, after a batch of `rows` that took `seconds`."""
        if not self.target or rows < self.size:
            return self.size  # fixed size, or a short last batch that says nothing of pace
        per_row = max(seconds, 1e-6) / rows
        # Smooth the time per row so one slow batch (a lock, a checkpoint) does not halve it.
        self._smoothed = per_row if self._smoothed is None else 0.7 * self._smoothed + 0.3 * per_row
        ideal = self.target / self._smoothed
        factor = min(MAX_GROWTH, max(MAX_SHRINK, ideal / self.size))
        self.size = max(self.minimum, min(self.maximum, round(self.size * factor)))
        return self.size


@dataclass(frozen=True)
class Hold:
    seconds: float
    reason: str


class Throttle:
    """Decides whether the next batch must wait, and why."""

    def __init__(
        self,
        *,
        max_rows_per_second: float | None,
        hook: Callable[[], Any],
        health: DatabaseHealth | None,
    ) -> None:
        self.max_rows_per_second = max_rows_per_second
        self.hook = hook
        self.health = health

    def rate_hold(self, rows: int, seconds: float) -> Hold | None:
        if not self.max_rows_per_second or rows <= 0:
            return None
        wait = rows / self.max_rows_per_second - seconds
        if wait <= 0:
            return None
        return Hold(wait, f"rate limit {self.max_rows_per_second:,.0f} rows/s")

    def condition_hold(self) -> Hold | None:
        """The backfill's own hook, then the database's health: re-asked while holding."""
        asked = self.hook()
        if asked:
            if isinstance(asked, tuple):
                seconds, reason = asked
            else:
                seconds, reason = float(asked), "throttle() asked to wait"
            return Hold(float(seconds), str(reason))
        if self.health is not None:
            return self.health.hold()
        return None


class DatabaseHealth:
    """PostgreSQL only: replica lag (on a primary with streaming replicas) and a long
    autovacuum of the table being written. Checked at most every `interval` seconds."""

    def __init__(
        self,
        using: str,
        table: str,
        *,
        max_replica_lag: float,
        max_autovacuum: float,
        interval: float = 5.0,
        wait: float = 5.0,
    ) -> None:
        self.using = using
        self.table = table
        self.max_replica_lag = max_replica_lag
        self.max_autovacuum = max_autovacuum
        self.interval = interval
        self.wait = wait
        self._checked_at = float("-inf")
        self._last: Hold | None = None

    @classmethod
    def for_table(cls, using: str, table: str, **limits: Any) -> DatabaseHealth | None:
        if connections[using].vendor != "postgresql":
            return None
        return cls(using, table, **limits)

    def hold(self) -> Hold | None:
        now = time.monotonic()
        if now - self._checked_at < self.interval:
            return self._last
        self._checked_at = now
        self._last = self._check()
        return self._last

    def _check(self) -> Hold | None:
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication"
            )
            lag = float(cursor.fetchone()[0] or 0)
            if lag > self.max_replica_lag:
                return Hold(self.wait, f"replica lag {lag:.0f} s > {self.max_replica_lag:.0f} s")
            cursor.execute(
                "SELECT coalesce(max(extract(epoch FROM now() - a.xact_start)), 0) "
                "FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a ON a.pid = v.pid "
                "WHERE v.relid = to_regclass(%s)",
                [self.table],
            )
            vacuum = float(cursor.fetchone()[0] or 0)
            if vacuum > self.max_autovacuum:
                return Hold(
                    self.wait,
                    f"autovacuum of {self.table} running for {vacuum:.0f} s "
                    f"> {self.max_autovacuum:.0f} s",
                )
        return None
