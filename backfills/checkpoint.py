"""The commit record of a run: its cursor and counters, guarded by a lease.

Each attempt claims a lease ordered by (epoch, attempt); the lease only moves forward. Every
checkpoint is a compare-and-set on the lease inside the batch's transaction, so an attempt that
Temporal has already given up on (a zombie after a long pause or a partition) cannot commit:
its batch rolls back and it stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import DataError, connections, router, transaction
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


@dataclass(frozen=True)
class BatchCheckpoint:
    """The checkpoint of one batch, but for where the batch ends and how many rows it did.

    `commit` records it with its own statement; `commit_with_transaction` also sends the
    COMMIT where it can. A batch that is itself one statement on the run's database can fold
    it in instead (`statement`: an UPDATE it runs as a CTE, with the cursor and the row count
    given as SQL over its own results), guarded by `lease_check`. Either way it is a
    compare-and-set on the lease that commits with the batch or not at all.
    """

    run_id: int
    lease: Lease
    rows_per_second: float | None = None
    current_batch_size: int | None = None

    def commit(self, cursor: dict[str, Any], rows: int) -> None:
        """Record the batch. Call inside its transaction; LeaseLost rolls it back."""
        connection = connections[run_database()]
        sql, params = self.statement(connection, "%s", "%s")
        cursor_param = _field("cursor").get_db_prep_save(cursor, connection)
        with connection.cursor() as db_cursor:
            db_cursor.execute(sql, [cursor_param, rows, *params])
            self.confirm(db_cursor.rowcount)

    def commit_with_transaction(
        self,
        cursor: dict[str, Any],
        rows: int,
        read_ahead: tuple[str, list[Any]] | None = None,
    ) -> list[Any] | None:
        """Record the batch and commit its transaction in one round trip, where it can be:
        PostgreSQL with psycopg 3, in the caller's outermost atomic block, as the block's
        last statement (the block then finds nothing left to commit, and runs its on-commit
        hooks as usual). Anywhere else, `commit`; the block commits.

        `read_ahead` is a SELECT to run in the same round trip, after the checkpoint and
        before the COMMIT (the next batch's rows); its rows are returned. None when the
        checkpoint could not send the COMMIT (nothing else was run).

        A lost lease must stop the COMMIT sent with it: `lease_check` fails the statement,
        which aborts the transaction instead.
        """
        connection = connections[run_database()]
        if not _commits_here(connection):
            self.commit(cursor, rows)
            return None
        sql, params = self.statement(connection, "%s", "%s")
        cursor_param = _field("cursor").get_db_prep_save(cursor, connection)
        ahead_sql, ahead_params = read_ahead or ("", [])
        with self.lease_guard(), connection.cursor() as db_cursor:
            db_cursor.execute(
                f"WITH {_CHECKPOINT_CTE} AS ({sql} RETURNING 1) "
                f"SELECT {self.lease_check('updated')} "
                f"FROM (SELECT count(*) AS updated FROM {_CHECKPOINT_CTE}) AS checkpoint; "
                + (f"{ahead_sql}; " if read_ahead else "")
                + "COMMIT",
                [cursor_param, rows, *params, *ahead_params],
            )
            if read_ahead is None:
                return []
            db_cursor.nextset()
            return list(db_cursor.fetchall())

    @staticmethod
    def lease_check(updated: str) -> str:
        """SQL that is 1 when `updated` (the count of run rows the checkpoint updated) is 1,
        and otherwise fails its statement, so that a statement (or a transaction sent with
        it) that holds the checkpoint cannot commit a batch under a lost lease. The failure
        is a text cast to an integer: PostgreSQL has no function that raises, and the text
        names the reason (`lease_guard` reads it)."""
        return (
            f"CAST(CASE WHEN {updated} = 1 THEN '1' "
            f"ELSE '{_LEASE_LOST_MARK} ' || {updated} END AS integer)"
        )

    @contextmanager
    def lease_guard(self) -> Iterator[None]:
        """Turns the failure of `lease_check` into LeaseLost."""
        try:
            yield
        except DataError as error:
            if _LEASE_LOST_MARK in str(error):
                raise LeaseLost(self.run_id, self.lease) from None
            raise

    def statement(
        self, connection: BaseDatabaseWrapper, cursor_sql: str, rows_sql: str, source: str = ""
    ) -> tuple[str, list[Any]]:
        """The UPDATE and its parameters, which follow any that `cursor_sql` and `rows_sql`
        hold; `source` is a FROM list they read (no row in it, no update). Written once per
        vendor (the ORM compiled it in more time than it ran in); values are prepared by the
        fields, as the ORM would."""
        template = _commit_template(connection)
        params = [
            _field("last_heartbeat_at").get_db_prep_save(timezone.now(), connection),
            self.rows_per_second,
            self.current_batch_size,
            self.run_id,
            self.lease.epoch,
            self.lease.attempt,
        ]
        source = f"FROM {source} " if source else ""
        return template.format(cursor=cursor_sql, rows=rows_sql, source=source), params

    def confirm(self, updated: int) -> None:
        """`updated` run rows: anything but one means a newer attempt holds the run."""
        if updated != 1:
            raise LeaseLost(self.run_id, self.lease)


_CHECKPOINT_CTE = "backfills_checkpointed"  # not the target databases' table
_LEASE_LOST_MARK = "backfills: lease lost, run rows updated:"


def _commits_here(connection: BaseDatabaseWrapper) -> bool:
    """Whether the checkpoint may send the COMMIT of the transaction it is in: the outermost
    atomic block (not one inside a caller's transaction, nor under a savepoint), set to
    commit on exit and not marked for rollback; psycopg 3, which then knows no transaction
    is left to commit, binding on the client (Django's default): with `server_side_binding`
    a message may hold only one statement."""
    outermost = (
        connection.in_atomic_block
        and connection.commit_on_exit
        and not connection.savepoint_ids
        and not connection.needs_rollback
    )
    if connection.vendor != "postgresql" or not outermost:
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3  # needs a driver

    if not is_psycopg3:
        return False
    from psycopg import ClientCursor

    return issubclass(connection.connection.cursor_factory, ClientCursor)


#: The checkpoint's UPDATE by database vendor (quoting differs), with {cursor} and {rows}
#: left for the SQL of the values and {source} for what they read.
_COMMIT_TEMPLATES: dict[str, str] = {}


def _field(name: str) -> Field[Any, Any]:
    field = BackfillRun._meta.get_field(name)
    assert isinstance(field, Field) and field.column
    return field


def _commit_template(connection: BaseDatabaseWrapper) -> str:
    if connection.vendor in _COMMIT_TEMPLATES:
        return _COMMIT_TEMPLATES[connection.vendor]
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(_field(name).column or name)

    rows, batches = column("rows_processed"), column("batches_processed")
    template = _COMMIT_TEMPLATES[connection.vendor] = (
        f"UPDATE {quote(BackfillRun._meta.db_table)} SET {column('cursor')} = {{cursor}}, "
        f"{rows} = {rows} + {{rows}}, {batches} = {batches} + 1, "
        f"{column('last_heartbeat_at')} = %s, {column('rows_per_second')} = %s, "
        f"{column('current_batch_size')} = %s {{source}}"
        f"WHERE {column('id')} = %s AND {column('lease_epoch')} = %s "
        f"AND {column('lease_attempt')} = %s"
    )
    return template


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
