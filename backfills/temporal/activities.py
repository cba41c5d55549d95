"""The activities: one long `process_batches` per run, and `mark_failed` for the end.

Sync activities, run by the worker in a thread pool (the ORM is sync). Django connections are
per thread: they are checked at the start and end of every activity and on errors, so a dropped
connection becomes a retryable failure rather than a hang.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, close_old_connections, transaction
from temporalio import activity
from temporalio.converter import value_to_type
from temporalio.exceptions import ApplicationError, CancelledError

from backfills.checkpoint import Lease, LeaseLost, RunMissing, RunNotRunnable
from backfills.exceptions import BackfillError
from backfills.models import BackfillRun, Status, can_transition
from backfills.registry import Registry
from backfills.registry import registry as default_registry
from backfills.runner import BatchFailure, BatchRunner, StopRequested
from backfills.temporal.types import (
    PROCESS_BATCHES,
    RECORD_STATUS,
    ProcessBatchesInput,
    ProcessBatchesResult,
    Progress,
    RecordStatusInput,
)
from backfills.transitions import change_status

logger = logging.getLogger(__name__)


@contextmanager
def fresh_connections() -> Iterator[None]:
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


class BackgroundHeartbeat:
    """Heartbeats the latest committed progress while a slow batch runs.

    Reads `runner.progress` on every beat (never a captured copy), in the activity's context
    so the SDK knows which activity is beating.
    """

    def __init__(self, runner: BatchRunner, interval: float) -> None:
        self._runner = runner
        self._interval = interval
        self._stopped = threading.Event()
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._beat,), name="backfill-heartbeat", daemon=True
        )

    def _beat(self) -> None:
        while not self._stopped.wait(self._interval):
            activity.heartbeat(self._runner.progress)

    def __enter__(self) -> BackgroundHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()


class EveryFewBatches:
    """Heartbeats after a batch at most every `interval` seconds.

    Each heartbeat wakes the worker's event loop, which then competes with the batch loop
    for the GIL; fast batches would pay that every time for nothing, since the worker sends
    at most one heartbeat per throttle interval anyway. The background heartbeat carries
    the latest progress in between.
    """

    def __init__(self, send: Callable[..., None], interval: float = 0.25) -> None:
        self.send = send
        self.interval = interval
        self._last = float("-inf")

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.send(progress)


def _stop_reason() -> str | None:
    if activity.is_cancelled():
        return "cancelled"
    if activity.is_worker_shutdown():
        return "worker shutdown"
    return None


class BackfillActivities:
    def __init__(self, registry: Registry = default_registry) -> None:
        self.registry = registry

    @activity.defn(name=PROCESS_BATCHES, no_thread_cancel_exception=True)
    def process_batches(self, input: ProcessBatchesInput) -> ProcessBatchesResult:
        info = activity.info()
        lease = Lease(input.epoch, info.attempt)
        runner = BatchRunner(
            input.run_id,
            lease,
            heartbeat=EveryFewBatches(activity.heartbeat),
            should_stop=_stop_reason,
            heartbeat_progress=_heartbeat_progress(info.heartbeat_details),
            registry=self.registry,
            workflow_run_id=info.workflow_run_id or "",
        )
        # The background heartbeat beats at least every second (the worker throttles what it
        # sends), so a slow batch neither times out nor hides a pause or cancel for long.
        interval = min(1.0, max(0.2, input.heartbeat_timeout_seconds / 4))
        with fresh_connections(), BackgroundHeartbeat(runner, interval):
            try:
                progress = runner.run()
            except StopRequested as stop:
                if stop.reason == "cancelled":
                    raise CancelledError("Cancelled between batches") from None
                # Retryable: another worker (or this one restarted) resumes from the cursor.
                raise ApplicationError(
                    f"Worker shutting down; run #{input.run_id} stopped after batch "
                    f"{stop.progress.batches_processed}",
                    type="WorkerShutdown",
                ) from None
            except (LeaseLost, RunNotRunnable) as exc:
                raise ApplicationError(
                    str(exc), type=type(exc).__name__, non_retryable=True
                ) from None
            except RunMissing as exc:
                raise ApplicationError(str(exc), type="RunMissing") from None
            except BackfillError as exc:
                raise ApplicationError(
                    str(exc), type=type(exc).__name__, non_retryable=True
                ) from exc
            except BatchFailure as failure:
                original = failure.original
                if isinstance(original, DatabaseError):
                    close_old_connections()
                raise ApplicationError(
                    str(original) or type(original).__name__,
                    {"cursor": failure.cursor},
                    type=type(original).__name__,
                ) from original
            except DatabaseError as exc:
                close_old_connections()
                raise ApplicationError(f"Database error: {exc}", type=type(exc).__name__) from exc
        return ProcessBatchesResult(
            rows_processed=progress.rows_processed,
            batches_processed=progress.batches_processed,
            cursor=progress.cursor,
        )

    @activity.defn(name=RECORD_STATUS)
    def record_status(self, input: RecordStatusInput) -> str:
        """The workflow's status changes once the activity has stopped: paused, cancelled,
        failed. Returns the run's status afterwards."""
        with fresh_connections(), transaction.atomic():
            run = BackfillRun.objects.select_for_update().filter(pk=input.run_id).first()
            if run is None:
                return ""
            if input.only_from and run.status not in input.only_from:
                return run.status
            target = Status(input.status)
            fields: dict[str, Any] = {}
            if target == Status.FAILED:
                # Keep the batch's own error (traceback, cursor) if the activity recorded one.
                fields["error"] = run.error or {
                    **(input.error or {}),
                    "traceback": "",
                    "cursor": run.cursor,
                }
            if target == Status.CANCELLED and run.status != Status.CANCELLING:
                # Cancelled from Temporal directly rather than through the service.
                change_status(run, Status.CANCELLING, note="cancelled in Temporal")
            if can_transition(run.status, target):
                change_status(run, target, note=input.note, **fields)
            else:
                logger.warning("Run %s: not recording %s over %s", run.pk, target, run.status)
            return run.status

    @property
    def all(self) -> list[Any]:
        return [self.process_batches, self.record_status]


def _heartbeat_progress(details: Any) -> Progress | None:
    # Details arrive without type hints: a dataclass comes back as a dict.
    if not details:
        return None
    try:
        return value_to_type(Progress, details[0])
    except Exception:  # details from an older shape: the run row is the commit record anyway
        logger.warning("Ignoring unreadable heartbeat details %r", details[0])
        return None
