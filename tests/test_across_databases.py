"""Reading from one database and writing to another, exactly once: the checkpoint commits in
the target database with each batch; the run row follows it."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connections

from backfills import ModelBackfill, services
from backfills.checkpoint import Lease, LeaseLost
from backfills.exceptions import ImproperlyDefinedBackfill
from backfills.models import BackfillRun, Checkpoint, Status
from backfills.runner import BatchRunner
from backfills.temporal.types import Progress
from tests.temporal_support import wait_until
from tests.testapp.models import CopiedItem, Item

OTHER = "other"


class CopyItemsAcrossBase(ModelBackfill):
    """Copies items from `source_database` into `target_database`."""

    model = Item

    def process_batch(self, batch: list[Item]) -> None:
        CopiedItem.objects.using(self.target_database).bulk_create(
            CopiedItem(source_id=item.pk, value=item.value) for item in batch
        )


pytestmark = pytest.mark.django_db(databases=["default", OTHER], transaction=True)


def copied() -> list[int]:
    return sorted(CopiedItem.objects.using(OTHER).values_list("source_id", flat=True))


def checkpoint_of(run_id: int) -> Checkpoint:
    return Checkpoint.objects.using(OTHER).get(run_id=run_id)


def make_run(rows: int, batch_size: int) -> BackfillRun:
    Item.objects.bulk_create(Item(value=i) for i in range(rows))
    return BackfillRun.objects.create(backfill_name="copy-items-across", batch_size=batch_size)


def test_checkpoint_commits_in_the_target_and_the_run_row_follows():
    run = make_run(25, 10)

    final = BatchRunner(run.pk, Lease(1, 1)).run()

    assert copied() == sorted(Item.objects.values_list("id", flat=True))
    point = checkpoint_of(run.pk)
    run.refresh_from_db()
    assert (point.rows_processed, point.batches_processed) == (25, 3)
    assert (run.rows_processed, run.batches_processed, run.cursor) == (25, 3, point.cursor)
    assert run.status == Status.SUCCEEDED
    assert final.rows_processed == 25
    # The default database holds no checkpoint: its commit record is the run row.
    assert not Checkpoint.objects.using("default").exists()


def test_a_zombie_cannot_commit_to_the_target():
    run = make_run(30, 10)
    finished: list[Progress] = []

    def zombie_heartbeat(progress: Progress) -> None:
        if progress.batches_processed == 1 and not finished:
            finished.append(BatchRunner(run.pk, Lease(1, 2)).run())

    with pytest.raises(LeaseLost):
        BatchRunner(run.pk, Lease(1, 1), heartbeat=zombie_heartbeat).run()

    assert copied() == sorted(Item.objects.values_list("id", flat=True))
    assert checkpoint_of(run.pk).rows_processed == 30
    run.refresh_from_db()
    assert (run.rows_processed, run.status) == (30, Status.SUCCEEDED)


def test_resume_takes_the_target_checkpoint_over_a_stale_run_row():
    run = make_run(30, 10)
    ids = sorted(Item.objects.values_list("id", flat=True))
    # The target committed two batches; the run row's copy lags one behind (a crash between
    # the target's commit and the copy).
    CopiedItem.objects.using(OTHER).bulk_create(CopiedItem(source_id=i, value=0) for i in ids[:20])
    Checkpoint.objects.using(OTHER).create(
        run_id=run.pk, cursor={"id": ids[19]}, rows_processed=20, batches_processed=2
    )
    BackfillRun.objects.filter(pk=run.pk).update(
        cursor={"id": ids[9]}, rows_processed=10, batches_processed=1
    )

    BatchRunner(run.pk, Lease(1, 1)).run()

    assert copied() == ids  # the unique source_id would have refused a repeat
    run.refresh_from_db()
    assert (run.rows_processed, run.batches_processed) == (30, 3)


def test_unknown_alias_and_unmigrated_target_are_refused_before_anything_starts(temporal, settings):
    from tests.testapp.backfills import CopyItemsAcross

    CopyItemsAcross.target_database = "nowhere"
    try:
        with pytest.raises(ImproperlyDefinedBackfill, match="'nowhere' is not a database alias"):
            services.start("copy-items-across")
    finally:
        CopyItemsAcross.target_database = OTHER

    with connections[OTHER].cursor() as cursor:
        cursor.execute("DROP TABLE backfills_checkpoint")
    try:
        with pytest.raises(
            ImproperlyDefinedBackfill, match=r"manage\.py migrate backfills --database=other"
        ):
            services.start("copy-items-across")
    finally:
        # Put the table back: mark its migration unapplied, apply it again, and mark the
        # later ones applied as they were.
        call_command("migrate", "backfills", "0004", database=OTHER, verbosity=0, fake=True)
        call_command("migrate", "backfills", "0005", database=OTHER, verbosity=0)
        call_command("migrate", "backfills", database=OTHER, verbosity=0, fake=True)
    assert BackfillRun.objects.count() == 0


@pytest.mark.chaos
def test_sigkill_across_databases_loses_and_repeats_nothing(spawn_worker):
    rows, batch = 6000, 100
    Item.objects.bulk_create((Item(value=i) for i in range(rows)), batch_size=5000)
    run = services.start("copy-items-across", batch_size=batch, params={"sleep": "0.02"})

    for point in (1, 20, 45):
        worker = spawn_worker()
        wait_until(
            lambda: BackfillRun.objects.get(pk=run.pk).batches_processed >= point,  # noqa: B023
            timeout=90,
        )
        worker.kill()
    spawn_worker()
    wait_until(lambda: BackfillRun.objects.get(pk=run.pk).is_finished, timeout=120)

    done = BackfillRun.objects.get(pk=run.pk)
    assert done.status == Status.SUCCEEDED, done.error
    assert copied() == sorted(Item.objects.values_list("id", flat=True))
    record = checkpoint_of(run.pk)
    assert (record.rows_processed, record.batches_processed) == (rows, rows // batch)
    assert (done.rows_processed, done.batches_processed) == (rows, rows // batch)


class CopyBetweenEngines(CopyItemsAcrossBase):
    name = "copy-between-engines"


@pytest.mark.django_db(databases=["default", OTHER, "mixed"], transaction=True)
@pytest.mark.parametrize(
    ("source", "target"),
    [("mixed", OTHER), ("default", "mixed")],
    ids=["sqlite-to-postgres", "postgres-to-sqlite"],
)
def test_copy_between_engines_is_exactly_once(source, target, registered):
    if "mixed" not in connections:
        pytest.skip("the default database is SQLite already")
    backfill = registered(type("Copy", (CopyBetweenEngines,), {
        "source_database": source, "target_database": target,
    }))  # fmt: skip
    Item.objects.using(source).bulk_create(Item(value=i) for i in range(95))
    run = BackfillRun.objects.create(backfill_name=backfill.name, batch_size=10)

    final = BatchRunner(run.pk, Lease(1, 1)).run()

    source_ids = sorted(Item.objects.using(source).values_list("id", flat=True))
    assert sorted(CopiedItem.objects.using(target).values_list("source_id", flat=True)) == (
        source_ids
    )
    record = Checkpoint.objects.using(target).get(run_id=run.pk)
    run.refresh_from_db()
    assert (record.rows_processed, record.batches_processed) == (95, 10)
    assert (run.rows_processed, run.status, final.rows_processed) == (95, Status.SUCCEEDED, 95)
