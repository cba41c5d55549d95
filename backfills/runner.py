"""The batch loop of one attempt, free of Temporal so it reads (and tests) on its own.

The activity gives it a way to heartbeat and a way to ask whether it should stop; the loop
checks that only between batches, so nothing interrupts a transaction.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models, transaction

from backfills import checkpoint
from backfills.base import ModelBackfill, UpdateBackfill
from backfills.checkpoint import BatchCheckpoint, Lease
from backfills.conf import backfills_settings
from backfills.iteration import BatchReader, Cursor, Keyset, check_queryset, resolve_keyset
from backfills.models import Status
from backfills.pacing import BatchSizer, DatabaseHealth, Hold, Throttle
from backfills.progress import SmoothedRate
from backfills.registry import Registry
from backfills.registry import registry as default_registry
from backfills.setbased import SetBasedBatches, cursor_from_values
from backfills.target import TargetCheckpoint, require_database
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


@dataclass(frozen=True)
class BatchStep:
    #: (cursor, size, its checkpoint) -> (rows processed, the cursor after them, whether the
    #: step wrote the checkpoint itself); no cursor at the end. Without a checkpoint (or when
    #: it cannot fold it into its own statement) the caller commits it.
    run: Callable[[Cursor | None, int, BatchCheckpoint | None], tuple[int, Cursor | None, bool]]
    #: Given its checkpoint, each batch is one statement that writes it: atomic by itself, it
    #: needs no transaction around it, and so no BEGIN and COMMIT to wait for.
    self_contained: bool = False


#: What a batch's work returns, through a dry run's rollback.
Done = TypeVar("Done")

#: Longest sleep between checks for a pause or cancel while a run is throttled.
HOLD_SLICE_SECONDS = 0.5


def _batch_step(
    backfill: ModelBackfill,
    keyset: Keyset,
    queryset: models.QuerySet[Any],
    database: str,
    dry_run: bool,
) -> BatchStep:
    """How one batch is fetched and processed, inside the caller's transaction (unless the
    step is self-contained)."""

    def dry(work: Callable[[], Done]) -> Done:
        if not dry_run:
            return work()
        # The batch's own writes roll back; the cursor still commits, so a dry run can be
        # paused, resumed and survives crashes like any run.
        with transaction.atomic(using=database):
            done = work()
            transaction.set_rollback(True, using=database)
        return done

    if isinstance(backfill, UpdateBackfill):
        batches = SetBasedBatches(keyset, queryset, backfill.get_update())

        def update_range(
            cursor: Cursor | None, size: int, checkpoint: BatchCheckpoint | None
        ) -> tuple[int, Cursor | None, bool]:
            # The rows counted are the rows the UPDATE changed. A dry run's statement rolls
            # back, so its checkpoint cannot be part of it.
            folded = None if dry_run else checkpoint
            batch = dry(lambda: batches.next_batch(cursor, size, folded))
            last = None if batch.last is None else cursor_from_values(keyset, batch.last)
            return batch.rows, last, batch.checkpointed

        return BatchStep(update_range, self_contained=not dry_run and batches.folds_checkpoint())

    reader = BatchReader(keyset, queryset)

    def process_rows(
        cursor: Cursor | None, size: int, checkpoint: BatchCheckpoint | None
    ) -> tuple[int, Cursor | None, bool]:
        batch = reader.batch(cursor, size)
        if not batch:
            return 0, None, False
        dry(lambda: backfill.process_batch(batch))
        after = keyset.cursor_of(batch[-1])
        if checkpoint is None:
            return len(batch), after, False
        # The checkpoint is the transaction's last statement. Where it sends the COMMIT, it
        # also reads the next batch's rows just before it: they are what the next batch's
        # own SELECT would read a moment later, without its round trip.
        ahead = reader.read_ahead(after, size, database)
        fetched = checkpoint.commit_with_transaction(after, len(batch), ahead)
        if ahead is not None and fetched is not None:
            reader.keep_read_ahead(after, size, fetched)
        return len(batch), after, True

    return BatchStep(process_rows)


def _same(hold: Hold) -> Hold:
    return hold


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
        self._throttled_reason = ""

    def run(self) -> Progress:
        """Process batches until the rows run out; returns the final committed progress."""
        run = checkpoint.claim(self.run_id, self.lease, self.workflow_run_id)
        backfill = build_backfill(run.backfill_name, run.params, self.registry)
        keyset = resolve_keyset(backfill.model, backfill.cursor_fields)
        origin = f"{type(backfill).__name__}.get_queryset()"
        queryset = backfill.get_queryset()
        check_queryset(queryset, backfill.model, origin)
        if backfill.source_database:
            require_database(backfill.source_database, "source_database")
            queryset = queryset.using(backfill.source_database)

        run_database = checkpoint.run_database()
        database = backfill.target_database or run_database
        # Writes to another database than the run row's: the commit record lives there.
        target = (
            TargetCheckpoint(database, self.run_id, self.lease)
            if database != run_database
            else None
        )
        if target is not None:
            require_database(database, "target_database")
            self.progress = target.claim(run)
        else:
            self.progress = Progress(run.cursor, run.rows_processed, run.batches_processed)
            ahead = self.heartbeat_progress
            if ahead is not None and ahead.batches_processed > self.progress.batches_processed:
                # The backfill writes somewhere the run row cannot commit with (at least once).
                checkpoint.catch_up(
                    self.run_id,
                    self.lease,
                    ahead.cursor,
                    ahead.rows_processed,
                    ahead.batches_processed,
                )
                self.progress = ahead
        self.heartbeat(self.progress)

        if run.rows_total is None:
            checkpoint.update_fields(self.run_id, self.lease, rows_total=queryset.count())

        step = _batch_step(backfill, keyset, queryset, database, run.dry_run)
        sizer = BatchSizer(
            run.current_batch_size or run.batch_size,
            backfill.target_batch_seconds,
            minimum=max(1, backfill.min_batch_size),
            maximum=backfill.max_batch_size or backfills_settings.max_batch_size,
        )
        throttle = Throttle(
            max_rows_per_second=backfill.max_rows_per_second,
            hook=backfill.throttle,
            health=DatabaseHealth.for_table(
                queryset.db,
                backfill.model._meta.db_table,
                max_replica_lag=backfill.max_replica_lag_seconds,
                max_autovacuum=backfill.max_autovacuum_seconds,
            )
            if backfill.check_database_health
            else None,
        )
        rate = SmoothedRate()
        rate.start()
        alone = step.self_contained and target is None
        while True:
            self._stop_if_asked()
            self._hold(throttle.condition_hold)
            self._show("")
            start = self.progress
            began = time.monotonic()
            try:
                with nullcontext() if alone else transaction.atomic(using=database):
                    if target is not None:
                        target.hold()
                    # Folded into the batch's own statement, its rate is the one before it.
                    foldable = (
                        None
                        if target is not None
                        else BatchCheckpoint(self.run_id, self.lease, rate.value, sizer.size)
                    )
                    rows, cursor, checkpointed = step.run(start.cursor, sizer.size, foldable)
                    if cursor is None:
                        return self._succeed(run_database)
                    rows_per_second = rate.add(rows)
                    if target is not None:
                        target.commit(cursor, rows)
                    elif not checkpointed:
                        # The block's last statement: it may send the COMMIT along.
                        BatchCheckpoint(
                            self.run_id, self.lease, rows_per_second, sizer.size
                        ).commit_with_transaction(cursor, rows)
            except checkpoint.LeaseLost:
                raise
            except Exception as exc:
                self._record_failure(exc, start.cursor)
                raise BatchFailure(exc, start.cursor) from exc
            self.progress = Progress(
                cursor, start.rows_processed + rows, start.batches_processed + 1
            )
            if target is not None:
                target.mirror(
                    self.progress,
                    rows_per_second=rows_per_second,
                    current_batch_size=sizer.size,
                )
            self.heartbeat(self.progress)
            elapsed = time.monotonic() - began
            sizer.record(rows, elapsed)
            rate_hold = throttle.rate_hold(rows, elapsed)
            if rate_hold is not None:
                self._hold(functools.partial(_same, rate_hold), once=True)

    def _succeed(self, run_database: str) -> Progress:
        # In the batch transaction when that is on the run row's database; otherwise the
        # run row has already been brought up to the target's checkpoint after each batch.
        with transaction.atomic(using=run_database):
            finished = checkpoint.locked_if_leased(self.run_id, self.lease)
            change_status(finished, Status.SUCCEEDED, error=None, throttled_reason="")
        return self.progress

    def _stop_if_asked(self) -> None:
        reason = self.should_stop()
        if reason:
            raise StopRequested(reason, self.progress)

    def _show(self, reason: str) -> None:
        """Keep the run row's `throttled_reason` in step (written only when it changes)."""
        if reason != self._throttled_reason:
            checkpoint.update_fields(self.run_id, self.lease, throttled_reason=reason[:255])
            self._throttled_reason = reason

    def _hold(self, ask: Callable[[], Hold | None], once: bool = False) -> None:
        """Wait while `ask` says to, showing why on the run row; stop requests still work."""
        hold = ask()
        while hold is not None:
            self._show(hold.reason)
            deadline = time.monotonic() + hold.seconds
            while (left := deadline - time.monotonic()) > 0:
                self._stop_if_asked()
                time.sleep(min(left, HOLD_SLICE_SECONDS))
            hold = None if once else ask()

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
