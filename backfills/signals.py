"""Django signals sent after a run's status change commits.

Receivers get `sender` (the backfill class, or None if it is no longer registered), `run`
(the BackfillRun) and, for `status_changed`, `from_status` and `to_status`. They run in the
process that made the change: the worker for start, pause, complete and error; the process
that called the service (admin, command) for resume and retry.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "Signal",
    "backfill_cancelled",
    "backfill_completed",
    "backfill_failed",
    "backfill_paused",
    "backfill_resumed",
    "backfill_started",
    "status_changed",
]

status_changed = Signal()
backfill_started = Signal()
backfill_paused = Signal()
backfill_resumed = Signal()
backfill_cancelled = Signal()
backfill_completed = Signal()
backfill_failed = Signal()
