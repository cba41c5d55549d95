"""The batch loop of one attempt, free of Temporal so it reads (and tests) on its own.

The activity gives it a way to heartbeat and a way to ask whether it should stop; the loop
checks that only between batches, so nothing interrupts a transaction.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from backfills import checkpoint
from backfills.base import ModelBackfill
from backfills.checkpoint import Lease
from backfills.iteration import check_queryset, resolve_keyset
from backfills.models import Status
from backfills.progress import SmoothedRate
from backfills.registry import Registry
from backfills.registry import registry as default_registry
from backfills.temporal.types import Progress
from backfills.transitions import change_status

logger = logging.getLogger(__name__)


class StopRequested(Exception):
    """The loop stopped between batches because `should_stop` said why."""

    def __init__(self, reason: str, progress: Progress) -> None:
        super().__init__(reason)
        self.reason = reason
        self.progress = progress


@dataclass
class BatchFailure(Exception):
    """`process_batch` raised; carries where, so the run row can say so."""

    original: BaseException
    cursor: dict[str, Any] | None

    def __str__(self) -> str:
        return f"{type(self.original).__name__}: {self.original}"


def build_backfill(name: str, params: dict[str, Any], registry: Registry) -> ModelBackfill:
    backfill_class = registry.get(name)
    return backfill_class(params=backfill_class.typed_params(params))


class BatchRunner:
    def __init__(
        self,
        run_id: int,
        lease: Lease,
        *,
        heartbeat: Callable[[Progress], None] = lambda progress: None,
        should_stop: Callable[[], str | None] = lambda: None,
        heartbeat_progress: Progress | None = None,
        registry: Registry = default_registry,
        workflow_run_id: str = "",
    ) -> None:
        self.run_id = run_id
        self.lease = lease
        self.heartbeat = heartbeat
        self.should_stop = should_stop
        self.heartbeat_progress = heartbeat_progress
        self.registry = registry
        self.workflow_run_id = workflow_run_id
        #: The last committed position; read by the background heartbeat, so always fresh.
        self.progress = Progress()

    def run(self) -> Progress:
        """Process batches until the rows run out; returns the final committed progress."""
        run = checkpoint.claim(self.run_id, self.lease, self.workflow_run_id)
        backfill = build_backfill(run.backfill_name, run.params, self.registry)
        keyset = resolve_keyset(backfill.model, backfill.cursor_fields)
        origin = f"{type(backfill).__name__}.get_queryset()"
        queryset = backfill.get_queryset()
        check_queryset(queryset, backfill.model, origin)

        self.progress = Progress(run.cursor, run.rows_processed, run.batches_processed)
        ahead = self.heartbeat_progress
        if ahead is not None and ahead.batches_processed > self.progress.batches_processed:
            # Only when the backfill writes to another database than the run row's.
            checkpoint.catch_up(
                self.run_id, self.lease, ahead.cursor, ahead.rows_processed, ahead.batches_processed
            )
            self.progress = ahead
        self.heartbeat(self.progress)

        if run.rows_total is None:
            checkpoint.update_fields(self.run_id, self.lease, rows_total=queryset.count())

        database = checkpoint.run_database()
        rate = SmoothedRate()
        rate.start()
        while True:
            reason = self.should_stop()
            if reason:
                raise StopRequested(reason, self.progress)
            start = self.progress
            try:
                with transaction.atomic(using=database):
                    batch = keyset.batch(queryset, start.cursor, run.batch_size)
                    if not batch:
                        finished = checkpoint.locked_if_leased(self.run_id, self.lease)
                        change_status(finished, Status.SUCCEEDED, error=None)
                        return self.progress
                    if run.dry_run:
                        # The batch's own writes roll back; the cursor still commits, so a
                        # dry run can be paused, resumed and survives crashes like any run.
                        with transaction.atomic(using=database):
                            backfill.process_batch(batch)
                            transaction.set_rollback(True, using=database)
                    else:
                        backfill.process_batch(batch)
                    cursor = keyset.cursor_of(batch[-1])
                    checkpoint.commit_batch(
                        self.run_id, self.lease, cursor, len(batch), rate.add(len(batch))
                    )
            except checkpoint.LeaseLost:
                raise
            except Exception as exc:
                self._record_failure(exc, start.cursor)
                raise BatchFailure(exc, start.cursor) from exc
            self.progress = Progress(
                cursor, start.rows_processed + len(batch), start.batches_processed + 1
            )
            self.heartbeat(self.progress)

    def _record_failure(self, exc: BaseException, cursor: dict[str, Any] | None) -> None:
        error = {
            "class": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "cursor": cursor,
        }
        logger.warning("Run #%s: batch after cursor %s failed: %s", self.run_id, cursor, exc)
        try:
            checkpoint.update_fields(self.run_id, self.lease, error=error)
        except Exception:  # the database itself may be what failed; the raise below still says it
            logger.exception("Run #%s: could not record the failure", self.run_id)
