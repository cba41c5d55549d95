"""Exactly-once across databases: the commit record in the target database.

A backfill that writes to another database than the run row's commits its checkpoint (cursor,
counters, lease) in that database, in the same transaction as the batch's writes. The run row
on the default database is a copy, brought up to the checkpoint after each commit and on
resume, never moved backwards.
"""

from __future__ import annotations

from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from backfills.checkpoint import Lease, LeaseLost
from backfills.exceptions import ImproperlyDefinedBackfill
from backfills.iteration import Cursor
from backfills.models import BackfillRun, Checkpoint
from backfills.temporal.types import Progress

PARTITION = 0


def require_database(alias: str, role: str) -> None:
    """Refuse an unknown alias, or a target database that was never migrated."""
    if alias not in connections:
        known = ", ".join(connections) or "none"
        raise ImproperlyDefinedBackfill(
            f"{role} {alias!r} is not a database alias in DATABASES (known: {known})."
        )
    if role != "target_database":
        return
    with connections[alias].cursor() as cursor:
        tables = connections[alias].introspection.table_names(cursor)
    if Checkpoint._meta.db_table not in tables:
        raise ImproperlyDefinedBackfill(
            f"Database {alias!r} has no {Checkpoint._meta.db_table} table, where runs that "
            f"write there keep their checkpoint. Run: manage.py migrate backfills "
            f"--database={alias}"
        )


class TargetCheckpoint:
    def __init__(self, alias: str, run_id: int, lease: Lease) -> None:
        self.alias = alias
        self.run_id = run_id
        self.lease = lease

    def _fenced(self) -> object:
        return Checkpoint.objects.using(self.alias).filter(
            run_id=self.run_id,
            partition=PARTITION,
            lease_epoch=self.lease.epoch,
            lease_attempt=self.lease.attempt,
        )

    def claim(self, run: BackfillRun) -> Progress:
        """Take the lease here too, and return where the run really stands."""
        with transaction.atomic(using=self.alias):
            checkpoint, _created = (
                Checkpoint.objects.using(self.alias)
                .select_for_update()
                .get_or_create(
                    run_id=self.run_id,
                    partition=PARTITION,
                    # A run that wrote elsewhere before (a retry after a code change) starts
                    # from what its run row recorded.
                    defaults={
                        "cursor": run.cursor,
                        "rows_processed": run.rows_processed,
                        "batches_processed": run.batches_processed,
                    },
                )
            )
            if Lease(checkpoint.lease_epoch, checkpoint.lease_attempt) > self.lease:
                raise LeaseLost(self.run_id, self.lease)
            checkpoint.lease_epoch = self.lease.epoch
            checkpoint.lease_attempt = self.lease.attempt
            checkpoint.save(update_fields=["lease_epoch", "lease_attempt", "updated_at"])
        progress = Progress(
            checkpoint.cursor, checkpoint.rows_processed, checkpoint.batches_processed
        )
        self.mirror(progress)
        return progress

    def hold(self) -> None:
        """First thing in a batch's transaction: lock the checkpoint, or stop if a newer
        attempt has taken it, before any of the batch's writes."""
        if not self._fenced().select_for_update().exists():  # type: ignore[attr-defined]
            raise LeaseLost(self.run_id, self.lease)

    def commit(self, cursor: Cursor, rows: int) -> None:
        """Inside the batch's transaction on the target database; LeaseLost rolls it back."""
        updated = self._fenced().update(  # type: ignore[attr-defined]
            cursor=cursor,
            rows_processed=F("rows_processed") + rows,
            batches_processed=F("batches_processed") + 1,
            updated_at=timezone.now(),
        )
        if updated != 1:
            raise LeaseLost(self.run_id, self.lease)

    def mirror(self, progress: Progress, **fields: object) -> None:
        """Copy the committed checkpoint to the run row, never backwards."""
        BackfillRun.objects.filter(
            pk=self.run_id,
            lease_epoch=self.lease.epoch,
            lease_attempt=self.lease.attempt,
            batches_processed__lte=progress.batches_processed,
        ).update(
            cursor=progress.cursor,
            rows_processed=progress.rows_processed,
            batches_processed=progress.batches_processed,
            last_heartbeat_at=timezone.now(),
            **fields,
        )
