"""The commit record of a run: its cursor and counters, guarded by a lease.

Each attempt claims a lease ordered by (epoch, attempt); the lease only moves forward. Every
checkpoint is a compare-and-set on the lease inside the batch's transaction, so an attempt that
Temporal has already given up on (a zombie after a long pause or a partition) cannot commit:
its batch rolls back and it stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.utils import timezone

from backfills.models import BackfillRun, Status
from backfills.transitions import announce_start, change_status

#: Statuses in which an attempt may work: a pause or cancel in flight is delivered to the
#: attempt by Temporal and takes effect at the next batch boundary.
WORKABLE_STATUSES = frozenset({Status.PENDING, Status.RUNNING, Status.PAUSING, Status.CANCELLING})


@dataclass(frozen=True, order=True)
class Lease:
    epoch: int
    attempt: int


class LeaseLost(Exception):
    """A newer attempt holds the run; this one must not write."""

    def __init__(self, run_id: int, lease: Lease) -> None:
        super().__init__(
            f"Run #{run_id}: attempt {lease.epoch}.{lease.attempt} lost its lease to a newer "
            f"attempt; stopping without writing."
        )


class RunNotRunnable(Exception):
    """The run row is finished: no attempt may work on it any more."""


class RunMissing(Exception):
    """No run row (yet): the workflow can start a moment before the row commits."""


def run_database() -> str:
    return router.db_for_write(BackfillRun)


def claim(run_id: int, lease: Lease, workflow_run_id: str = "") -> BackfillRun:
    """Take the run for this attempt; refuse if a newer attempt already holds it.

    `workflow_run_id` is the execution the attempt belongs to: after continue-as-new the
    run row follows the current one.
    """
    with transaction.atomic(using=run_database()):
        run = BackfillRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise RunMissing(f"Run #{run_id} does not exist (deleted, or not yet committed).")
        if Lease(run.lease_epoch, run.lease_attempt) > lease:
            raise LeaseLost(run_id, lease)
        if run.status not in WORKABLE_STATUSES:
            raise RunNotRunnable(f"Run #{run_id} is {run.status}; nothing to do.")
        now = timezone.now()
        if run.started_at is None and run.status != Status.PENDING:
            # Paused and resumed before any worker took it: it starts only now.
            transaction.on_commit(lambda: announce_start(run), using=run_database())
        run.lease_epoch, run.lease_attempt = lease.epoch, lease.attempt
        run.started_at = run.started_at or now
        run.last_heartbeat_at = now
        run.workflow_run_id = workflow_run_id or run.workflow_run_id
        run.save(
            update_fields=[
                "lease_epoch",
                "lease_attempt",
                "started_at",
                "last_heartbeat_at",
                "workflow_run_id",
            ]
        )
        if run.status == Status.PENDING:
            change_status(run, Status.RUNNING)
    return run


def locked_if_leased(run_id: int, lease: Lease) -> BackfillRun:
    """The run row locked for this transaction, if this attempt still holds the lease."""
    run = _fenced(run_id, lease).select_for_update().first()
    if run is None:
        raise LeaseLost(run_id, lease)
    return run


def _fenced(run_id: int, lease: Lease) -> Any:
    return BackfillRun.objects.filter(
        pk=run_id, lease_epoch=lease.epoch, lease_attempt=lease.attempt
    )


def commit_batch(
    run_id: int,
    lease: Lease,
    cursor: dict[str, Any],
    rows: int,
    rows_per_second: float | None = None,
    current_batch_size: int | None = None,
) -> None:
    """Record one batch. Call inside the batch's transaction; raises LeaseLost to roll it back.

    One statement per batch, so it is written once (not compiled by the ORM each time, which
    cost more than running it); values are prepared by the fields, as the ORM would.
    """
    connection = connections[run_database()]
    params = [
        _field("cursor").get_db_prep_save(cursor, connection),
        rows,
        _field("last_heartbeat_at").get_db_prep_save(timezone.now(), connection),
        rows_per_second,
        current_batch_size,
        run_id,
        lease.epoch,
        lease.attempt,
    ]
    with connection.cursor() as db_cursor:
        db_cursor.execute(_commit_sql(connection), params)
        updated = db_cursor.rowcount
    if updated != 1:
        raise LeaseLost(run_id, lease)


#: The statement of commit_batch, by database vendor (quoting differs, nothing else).
_COMMIT_SQL: dict[str, str] = {}


def _field(name: str) -> Field[Any, Any]:
    field = BackfillRun._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return field


def _commit_sql(connection: BaseDatabaseWrapper) -> str:
    if connection.vendor in _COMMIT_SQL:
        return _COMMIT_SQL[connection.vendor]
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(_field(name).column or name)

    rows, batches = column("rows_processed"), column("batches_processed")
    sql = _COMMIT_SQL[connection.vendor] = (
        f"UPDATE {quote(BackfillRun._meta.db_table)} SET {column('cursor')} = %s, "
        f"{rows} = {rows} + %s, {batches} = {batches} + 1, "
        f"{column('last_heartbeat_at')} = %s, {column('rows_per_second')} = %s, "
        f"{column('current_batch_size')} = %s "
        f"WHERE {column('id')} = %s AND {column('lease_epoch')} = %s "
        f"AND {column('lease_attempt')} = %s"
    )
    return sql


def update_fields(run_id: int, lease: Lease, **fields: Any) -> None:
    """Write other run fields (estimate, error, final status) under the same fence."""
    if _fenced(run_id, lease).update(**fields) != 1:
        raise LeaseLost(run_id, lease)


def catch_up(
    run_id: int, lease: Lease, cursor: dict[str, Any] | None, rows: int, batches: int
) -> None:
    """Bring the run row up to a heartbeat that is ahead of it (never backwards)."""
    _fenced(run_id, lease).filter(batches_processed__lt=batches).update(
        cursor=cursor, rows_processed=rows, batches_processed=batches
    )
