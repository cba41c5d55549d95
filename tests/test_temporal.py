"""The workflow and its activity against a real dev server, with an in-process worker."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType

from backfills import services
from backfills.models import BackfillRun, Status
from backfills.temporal.client import with_client
from tests.temporal_support import wait_until
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


def finished(run_id: int) -> BackfillRun | None:
    run = BackfillRun.objects.get(pk=run_id)
    return run if run.is_finished else None


def test_run_processes_every_row_exactly_once(worker):
    Item.objects.bulk_create(Item(value=i) for i in range(1050))
    run = services.start("touch-items", batch_size=100)

    done = wait_until(lambda: finished(run.pk), what="the run to finish")

    assert done.status == Status.SUCCEEDED
    assert done.rows_processed == 1050
    assert done.batches_processed == 11
    assert done.rows_total == 1050
    assert set(Item.objects.values_list("visits", flat=True)) == {1}
    assert done.cursor == {"id": Item.objects.latest("id").pk}


def history_event_types(workflow_id: str, run_id: str) -> list[str]:
    async def fetch(client):
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        # The run row says "succeeded" a moment before the workflow itself completes.
        await handle.result()
        history = await handle.fetch_history()
        return [EventType.Name(event.event_type) for event in history.events]

    return with_client(fetch)


def test_history_size_does_not_depend_on_rows(worker):
    Item.objects.bulk_create(Item(value=i) for i in range(20_000))
    small_ids = list(Item.objects.order_by("id").values_list("id", flat=True)[:1000])

    # The same backfill over 1,000 rows (a filtered copy) and over 20,000 rows.
    Item.objects.exclude(id__in=small_ids).update(value=-1)
    small = services.start("touch-odd-items", batch_size=10)
    small_done = wait_until(lambda: finished(small.pk), what="the small run")
    Item.objects.update(value=1)
    large = services.start("touch-odd-items", batch_size=10)
    large_done = wait_until(lambda: finished(large.pk), timeout=120, what="the large run")

    assert small_done.status == large_done.status == Status.SUCCEEDED
    assert small_done.batches_processed < large_done.batches_processed
    small_events = history_event_types(small_done.workflow_id, small_done.workflow_run_id)
    large_events = history_event_types(large_done.workflow_id, large_done.workflow_run_id)
    assert small_events == large_events
    assert len(large_events) <= 15


def test_transient_batch_error_is_retried_and_rolled_back(worker):
    Item.objects.bulk_create(Item(value=i) for i in range(500))
    poison = Item.objects.order_by("id")[250].pk
    run = services.start(
        "touch-items", batch_size=100, params={"poison_id": str(poison), "transient": "true"}
    )

    done = wait_until(lambda: finished(run.pk), what="the run to finish")

    assert done.status == Status.SUCCEEDED
    # The failing batch's writes rolled back and were redone once on the retry.
    assert set(Item.objects.values_list("visits", flat=True)) == {1}
    assert done.rows_processed == 500
    assert done.error is None


def test_permanent_batch_error_fails_the_run_with_error_and_cursor(worker, settings):
    settings.BACKFILLS_MAX_ATTEMPTS = 3
    Item.objects.bulk_create(Item(value=i) for i in range(500))
    ids = list(Item.objects.order_by("id").values_list("id", flat=True))
    poison = ids[250]
    run = services.start("touch-items", batch_size=100, params={"poison_id": str(poison)})

    done = wait_until(lambda: finished(run.pk), what="the run to fail")

    assert done.status == Status.FAILED
    assert done.finished_at is not None
    assert done.error["class"] == "builtins.ValueError"
    assert done.error["message"] == f"poisoned row {poison}"
    assert "Traceback" in done.error["traceback"] and "process_batch" in done.error["traceback"]
    # The failing batch starts after the second batch's last row; nothing of it committed.
    assert done.error["cursor"] == {"id": ids[199]}
    assert done.cursor == {"id": ids[199]}
    assert done.rows_processed == 200 and done.batches_processed == 2
    visits = dict(Item.objects.values_list("id", "visits"))
    assert all(visits[i] == 1 for i in ids[:200])
    assert all(visits[i] == 0 for i in ids[200:])


def test_improperly_defined_backfill_fails_without_retrying(worker, settings):
    settings.BACKFILLS_MAX_ATTEMPTS = 50
    Item.objects.bulk_create(Item(value=i) for i in range(10))
    run = services.start("touch-items", batch_size=5)
    # A deploy changed the backfill's cursor after the run started: the stored cursor no
    # longer fits and retrying cannot help.
    BackfillRun.objects.filter(pk=run.pk).update(cursor={"created_at": "2026-01-01"})

    done = wait_until(lambda: finished(run.pk), timeout=30, what="the run to fail")

    assert done.status == Status.FAILED
    assert done.error["class"] == "backfills.exceptions.ImproperlyDefinedBackfill"
    assert "cursor_fields changed" in done.error["message"]


def test_a_batch_slower_than_the_heartbeat_timeout_keeps_its_attempt(worker, settings):
    # One attempt only: if the attempt went silent during the slow batch, Temporal would
    # time it out and the run would fail.
    settings.BACKFILLS_MAX_ATTEMPTS = 1
    slow = settings.BACKFILLS_HEARTBEAT_TIMEOUT * 1.5
    Item.objects.bulk_create(Item(value=i) for i in range(10))
    run = services.start("touch-items", batch_size=5, params={"sleep": str(slow)})

    done = wait_until(lambda: finished(run.pk), timeout=60, what="the run to finish")

    assert done.status == Status.SUCCEEDED, done.error
    assert (done.lease_attempt, done.batches_processed) == (1, 2)
    assert set(Item.objects.values_list("visits", flat=True)) == {1}
