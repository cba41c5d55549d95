"""Chaos: real worker processes killed mid-run; every row is then checked."""

from __future__ import annotations

import signal

import pytest
from django.db.models import Count

from backfills import services
from backfills.models import BackfillRun, Status
from tests.temporal_support import wait_until
from tests.testapp.models import Item

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

ROWS = 20_000
BATCH = 200


def run_row(run_id: int) -> BackfillRun:
    return BackfillRun.objects.get(pk=run_id)


def assert_exactly_once(run_id: int) -> None:
    run = run_row(run_id)
    assert run.status == Status.SUCCEEDED, run.error
    counts = dict(Item.objects.values_list("visits").annotate(n=Count("id")))
    assert counts == {1: ROWS}, f"rows by number of visits: {counts}"
    assert (run.rows_processed, run.batches_processed) == (ROWS, ROWS // BATCH)
    assert run.cursor == {"id": Item.objects.latest("id").pk}


@pytest.mark.parametrize(
    "backfill",
    [
        pytest.param("touch-items", id="python-transform"),
        pytest.param("visit-items-in-sql", id="set-based"),
    ],
)
def test_sigkill_at_several_points_loses_and_repeats_nothing(spawn_worker, backfill):
    Item.objects.bulk_create((Item(value=i) for i in range(ROWS)), batch_size=5000)
    # The sleep sits inside the batch's transaction, so most kills land mid-transaction.
    run = services.start(backfill, batch_size=BATCH, params={"sleep": "0.02"})

    def reached(batches: int) -> bool:
        return run_row(run.pk).batches_processed >= batches

    kills = []
    for point in (1, 35, 80):
        worker = spawn_worker()
        wait_until(lambda: reached(point), timeout=90, what=f"batch {point}")  # noqa: B023
        worker.kill()
        kills.append(run_row(run.pk).batches_processed)
    spawn_worker()

    wait_until(lambda: run_row(run.pk).is_finished, timeout=120, what="the run to finish")
    assert kills == sorted(kills) and kills[-1] < ROWS // BATCH
    assert_exactly_once(run.pk)


def test_sigterm_lets_the_current_batch_commit_then_resumes(spawn_worker):
    Item.objects.bulk_create((Item(value=i) for i in range(ROWS)), batch_size=5000)
    run = services.start("touch-items", batch_size=BATCH, params={"sleep": "0.05"})

    first = spawn_worker()
    wait_until(lambda: run_row(run.pk).batches_processed >= 20, timeout=60, what="batch 20")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.log()
    stopped_at = run_row(run.pk).batches_processed
    assert run_row(run.pk).status == Status.RUNNING
    # Committed work equals what the database holds at the moment the worker exited.
    assert Item.objects.filter(visits=1).count() == run_row(run.pk).rows_processed

    spawn_worker()
    wait_until(lambda: run_row(run.pk).is_finished, timeout=120, what="the run to finish")
    assert stopped_at < ROWS // BATCH
    assert_exactly_once(run.pk)
