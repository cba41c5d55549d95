"""Fencing and resuming, on the batch loop itself (no Temporal needed)."""

from __future__ import annotations

from typing import ClassVar

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from backfills import ModelBackfill, checkpoint
from backfills.checkpoint import Lease, LeaseLost
from backfills.models import BackfillRun, Status
from backfills.runner import BatchRunner
from backfills.temporal.types import Progress
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db


def make_run(rows: int = 10, batch_size: int = 3) -> BackfillRun:
    Item.objects.bulk_create(Item(value=i) for i in range(rows))
    return BackfillRun.objects.create(backfill_name="touch-items", batch_size=batch_size)


def visits() -> list[int]:
    return list(Item.objects.order_by("id").values_list("visits", flat=True))


def test_checkpoint_of_a_superseded_attempt_rolls_back_its_batch():
    run = make_run()
    checkpoint.claim(run.pk, Lease(1, 1))
    checkpoint.claim(run.pk, Lease(1, 2))  # Temporal retried; the first attempt is a zombie

    with pytest.raises(LeaseLost), transaction.atomic():
        Item.objects.update(visits=F("visits") + 1)
        checkpoint.BatchCheckpoint(run.pk, Lease(1, 1)).commit({"id": 3}, 3)

    assert set(visits()) == {0}
    run.refresh_from_db()
    assert (run.cursor, run.rows_processed, run.batches_processed) == (None, 0, 0)


def test_a_stale_attempt_cannot_take_the_lease_back():
    run = make_run()
    checkpoint.claim(run.pk, Lease(2, 1))

    with pytest.raises(LeaseLost):
        checkpoint.claim(run.pk, Lease(1, 9))

    run.refresh_from_db()
    assert (run.lease_epoch, run.lease_attempt) == (2, 1)


def test_finished_run_cannot_be_claimed():
    run = make_run()
    BackfillRun.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED)

    with pytest.raises(checkpoint.RunNotRunnable, match="succeeded"):
        checkpoint.claim(run.pk, Lease(1, 1))


def test_zombie_attempt_neither_skips_nor_repeats_rows():
    run = make_run(rows=10, batch_size=3)
    newer_finished: list[Progress] = []

    def zombie_heartbeat(progress: Progress) -> None:
        # Once the zombie has committed its first batch, a newer attempt takes over the run
        # and finishes it while the zombie is still alive.
        if progress.batches_processed == 1 and not newer_finished:
            newer_finished.append(BatchRunner(run.pk, Lease(1, 2)).run())

    zombie = BatchRunner(run.pk, Lease(1, 1), heartbeat=zombie_heartbeat)
    with pytest.raises(LeaseLost):
        zombie.run()

    assert visits() == [1] * 10
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert (run.rows_processed, run.batches_processed) == (10, 4)
    assert newer_finished[0].rows_processed == 10


def test_resume_takes_the_later_of_row_and_heartbeat():
    run = make_run(rows=10, batch_size=3)
    ids = list(Item.objects.order_by("id").values_list("id", flat=True))
    # Committed: two batches. The heartbeat says three (the backfill wrote elsewhere).
    BackfillRun.objects.filter(pk=run.pk).update(
        cursor={"id": ids[5]}, rows_processed=6, batches_processed=2
    )
    ahead = Progress(cursor={"id": ids[8]}, rows_processed=9, batches_processed=3)

    final = BatchRunner(run.pk, Lease(1, 1), heartbeat_progress=ahead).run()

    assert visits() == [0] * 9 + [1]
    assert (final.rows_processed, final.batches_processed) == (10, 4)
    run.refresh_from_db()
    assert (run.rows_processed, run.batches_processed, run.cursor) == (10, 4, {"id": ids[9]})


def test_heartbeat_behind_the_row_is_ignored():
    run = make_run(rows=10, batch_size=3)
    ids = list(Item.objects.order_by("id").values_list("id", flat=True))
    BackfillRun.objects.filter(pk=run.pk).update(
        cursor={"id": ids[5]}, rows_processed=6, batches_processed=2
    )
    behind = Progress(cursor={"id": ids[2]}, rows_processed=3, batches_processed=1)

    final = BatchRunner(run.pk, Lease(1, 1), heartbeat_progress=behind).run()

    assert visits() == [0] * 6 + [1] * 4
    assert (final.rows_processed, final.batches_processed) == (10, 4)


def test_the_database_itself_refuses_a_second_active_run_of_a_backfill():
    from django.db import IntegrityError, transaction

    BackfillRun.objects.create(backfill_name="touch-items", batch_size=1, status=Status.FAILED)
    BackfillRun.objects.create(backfill_name="touch-items", batch_size=1, status=Status.SUCCEEDED)
    active = BackfillRun.objects.create(backfill_name="touch-items", batch_size=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        BackfillRun.objects.create(backfill_name="touch-items", batch_size=1, status=Status.PAUSED)

    # Once the active run finishes, another may start.
    BackfillRun.objects.filter(pk=active.pk).update(status=Status.CANCELLED)
    BackfillRun.objects.create(backfill_name="touch-items", batch_size=1)
    assert BackfillRun.objects.active().count() == 1


# --- the checkpoint sends the batch's COMMIT (PostgreSQL): tests that really commit -------

ON_POSTGRESQL = connection.vendor == "postgresql"


def committed_with_the_checkpoint(queries: CaptureQueriesContext) -> int:
    return sum(query["sql"].endswith("; COMMIT") for query in queries.captured_queries)


def own_reads_of_items(queries: CaptureQueriesContext) -> int:
    """Batches read by a SELECT of their own, not ahead in the previous checkpoint's message."""
    quote = connection.ops.quote_name
    own = f"SELECT {quote('testapp_item')}.{quote('id')}"
    return sum(query["sql"].startswith(own) for query in queries.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_batch_commits_with_its_checkpoint_and_the_next_batchs_read():
    run = make_run(rows=10, batch_size=4)

    with CaptureQueriesContext(connection) as queries:
        final = BatchRunner(run.pk, Lease(1, 1)).run()

    assert (final.rows_processed, final.batches_processed) == (10, 3)
    assert committed_with_the_checkpoint(queries) == (3 if ON_POSTGRESQL else 0)
    # Elsewhere each batch, and the last look that finds no rows, reads for itself.
    assert own_reads_of_items(queries) == (1 if ON_POSTGRESQL else 4)
    assert visits() == [1] * 10
    run.refresh_from_db()
    assert (run.status, run.rows_processed, run.batches_processed) == (Status.SUCCEEDED, 10, 3)


@pytest.mark.django_db(transaction=True)
def test_a_lost_lease_stops_the_commit_sent_with_the_checkpoint():
    run = make_run()
    checkpoint.claim(run.pk, Lease(1, 1))
    checkpoint.claim(run.pk, Lease(1, 2))

    with pytest.raises(LeaseLost), transaction.atomic():
        Item.objects.update(visits=F("visits") + 1)
        checkpoint.BatchCheckpoint(run.pk, Lease(1, 1)).commit_with_transaction({"id": 3}, 3)

    assert set(visits()) == {0}
    run.refresh_from_db()
    assert (run.cursor, run.rows_processed, run.batches_processed) == (None, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_a_zombie_that_commits_with_its_checkpoint_still_neither_skips_nor_repeats():
    test_zombie_attempt_neither_skips_nor_repeats_rows()


@pytest.mark.django_db(transaction=True)
def test_on_commit_hooks_of_a_batch_run_once_it_has_committed():
    run = make_run()
    checkpoint.claim(run.pk, Lease(1, 1))
    ran: list[int] = []

    with transaction.atomic():
        Item.objects.update(visits=1)
        transaction.on_commit(lambda: ran.append(Item.objects.filter(visits=1).count()))
        checkpoint.BatchCheckpoint(run.pk, Lease(1, 1)).commit_with_transaction({"id": 3}, 3)
        assert ran == []

    assert ran == [10]
    assert not connection.in_atomic_block


@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_the_checkpoint_leaves_the_commit_to_it():
    run = make_run()
    checkpoint.claim(run.pk, Lease(1, 1))

    with transaction.atomic():
        with transaction.atomic():
            Item.objects.update(visits=1)
            checkpoint.BatchCheckpoint(run.pk, Lease(1, 1)).commit_with_transaction({"id": 3}, 3)
        transaction.set_rollback(True)  # the caller changes its mind: nothing may be left

    assert set(visits()) == {0}
    run.refresh_from_db()
    assert (run.cursor, run.rows_processed) == (None, 0)


class RaiseWhatComesNext(ModelBackfill):
    """Each batch adds 1 to every row after it: a batch must see what the ones before it
    wrote, even when its rows were read with the previous batch's checkpoint."""

    name = "raise-what-comes-next"
    model = Item
    batch_size = 3
    seen: ClassVar[list[list[int]]] = []

    def process_batch(self, batch: list[Item]) -> None:
        self.seen.append([item.value for item in batch])
        Item.objects.filter(pk__gt=batch[-1].pk).update(value=F("value") + 1)


@pytest.mark.django_db(transaction=True)
def test_rows_read_ahead_hold_what_the_batch_before_them_wrote(registered):
    registered(RaiseWhatComesNext)
    RaiseWhatComesNext.seen = []
    Item.objects.bulk_create(Item(value=0) for _ in range(9))
    run = BackfillRun.objects.create(backfill_name="raise-what-comes-next", batch_size=3)

    BatchRunner(run.pk, Lease(1, 1)).run()

    assert RaiseWhatComesNext.seen == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]


@pytest.mark.django_db(transaction=True)
def test_with_server_side_binding_the_checkpoint_leaves_the_commit_to_the_block(
    server_side_binding,
):
    run = make_run(rows=10, batch_size=4)

    with CaptureQueriesContext(connection) as queries:
        final = BatchRunner(run.pk, Lease(1, 1)).run()

    # One statement a message there: the block commits, each batch reads for itself.
    assert (final.rows_processed, final.batches_processed) == (10, 3)
    assert committed_with_the_checkpoint(queries) == 0
    assert own_reads_of_items(queries) == 4
    assert visits() == [1] * 10
