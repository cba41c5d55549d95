"""Operators steering long runs, and the world failing around them: pause/resume cycles,
continue-as-new, a restarted Temporal server, dropped database connections."""

from __future__ import annotations

import itertools
import time

import pytest
from django.db import connection
from temporalio.client import WorkflowExecutionStatus

from backfills import services
from backfills.models import BackfillRun, Status
from backfills.temporal.client import with_client
from tests.temporal_support import DevServer, InProcessWorker, wait_until
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


def run_row(run_id: int) -> BackfillRun:
    return BackfillRun.objects.get(pk=run_id)


def history_length(workflow_id: str) -> int:
    async def fetch(client):
        description = await client.get_workflow_handle(workflow_id).describe()
        return description.raw_description.workflow_execution_info.history_length

    return with_client(fetch)


def executions(workflow_id: str) -> list[WorkflowExecutionStatus | None]:
    """Statuses of the workflow's executions, once the latest has closed (the run row says
    "succeeded" a moment before the workflow itself completes)."""

    async def fetch(client):
        await client.get_workflow_handle(workflow_id).result()
        return [
            execution.status
            async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'")
        ]

    return with_client(fetch)


def assert_every_row_once(run_id: int, rows: int) -> None:
    run = run_row(run_id)
    assert run.status == Status.SUCCEEDED, run.error
    visits = list(Item.objects.values_list("visits", flat=True).distinct())
    assert visits == [1], f"visit counts found: {visits}"
    assert run.rows_processed == rows == Item.objects.count()


def pause_and_resume(run_id: int) -> None:
    services.pause(run_id, by="test")
    try:
        wait_until(lambda: run_row(run_id).status == Status.PAUSED, timeout=30, what="paused")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {describe(run_id)}") from None
    services.resume(run_id, by="test")


def describe(run_id: int) -> str:
    """The run row, the workflow's state and its latest events, for a failing assertion."""
    from temporalio.api.enums.v1 import EventType

    run = run_row(run_id)

    async def fetch(client):
        handle = client.get_workflow_handle(run.workflow_id)
        state = await handle.query("state")
        history = await handle.fetch_history()
        failures = [
            event.workflow_task_failed_event_attributes.failure.message
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        events = [EventType.Name(event.event_type)[11:] for event in history.events]
        return state, [*events, f"task failures: {failures}"]

    state, events = with_client(fetch)
    return (
        f"run {run.status}, {run.batches_processed} batches, lease {run.lease_epoch}."
        f"{run.lease_attempt}; workflow {state}; last events {events[-25:]}"
    )


def test_twenty_pause_resume_cycles_lose_and_repeat_nothing(worker):
    rows = 50_000
    Item.objects.bulk_create((Item(value=i) for i in range(rows)), batch_size=10_000)
    # 500 batches of at least 50 ms: the run outlasts the cycles by far.
    run = services.start("touch-items", batch_size=100, params={"sleep": "0.05"})
    wait_until(lambda: run_row(run.pk).batches_processed >= 1, what="the first batch")

    lengths = [history_length(run.workflow_id)]
    paused_at = []
    for _ in range(20):
        pause_and_resume(run.pk)
        paused_at.append(run_row(run.pk).batches_processed)
        lengths.append(history_length(run.workflow_id))
        # Let each resumed activity commit at least one batch before the next pause.
        wait_until(lambda: run_row(run.pk).batches_processed > paused_at[-1], what="progress")

    wait_until(lambda: run_row(run.pk).is_finished, timeout=120, what="the run to finish")
    assert_every_row_once(run.pk, rows)
    assert paused_at == sorted(paused_at) and paused_at[-1] < rows // 100
    growth = [after - before for before, after in itertools.pairwise(lengths)]
    # A cycle is two signals, a cancelled and a new activity, one status recording and
    # their workflow tasks: a handful of events, whatever the number of rows.
    assert max(growth) <= 20, growth
    assert executions(run.workflow_id) == [WorkflowExecutionStatus.COMPLETED]


def test_continue_as_new_when_forced_carries_the_run(worker, settings):
    settings.BACKFILLS_CONTINUE_AS_NEW_AFTER_EVENTS = 40
    rows = 20_000
    Item.objects.bulk_create((Item(value=i) for i in range(rows)), batch_size=10_000)
    run = services.start("touch-items", batch_size=100, params={"sleep": "0.05"})
    first_execution = run.workflow_run_id

    for _ in range(6):
        wait_until(lambda: run_row(run.pk).status == Status.RUNNING, what="running")
        pause_and_resume(run.pk)
    # Paused across continue-as-new: the new execution must stay paused until resumed.
    services.pause(run.pk, by="test")
    wait_until(lambda: run_row(run.pk).status == Status.PAUSED, timeout=30, what="paused")
    held = run_row(run.pk).batches_processed
    time.sleep(1.5)
    assert run_row(run.pk).batches_processed == held
    services.resume(run.pk, by="test")

    wait_until(lambda: run_row(run.pk).is_finished, timeout=120, what="the run to finish")
    assert_every_row_once(run.pk, rows)
    statuses = executions(run.workflow_id)
    assert statuses.count(WorkflowExecutionStatus.CONTINUED_AS_NEW) >= 1, statuses
    assert statuses.count(WorkflowExecutionStatus.COMPLETED) == 1, statuses
    # The run row follows the execution that did the work.
    assert run_row(run.pk).workflow_run_id != first_execution


def test_dropped_database_connections_are_retried(spawn_worker):
    rows = 10_000
    Item.objects.bulk_create((Item(value=i) for i in range(rows)), batch_size=10_000)
    run = services.start("touch-items", batch_size=100, params={"sleep": "0.02"})
    spawn_worker()

    terminated = 0
    for point in (10, 40, 70):
        wait_until(lambda: run_row(run.pk).batches_processed >= point, timeout=90)  # noqa: B023
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            terminated += cursor.fetchone()[0]

    wait_until(lambda: run_row(run.pk).is_finished, timeout=120, what="the run to finish")
    assert terminated >= 3
    assert_every_row_once(run.pk, rows)


@pytest.fixture
def own_server(temporal, settings):
    """A dev server of this test's own, which it may stop and restart."""
    server = DevServer()
    server.start()
    settings.TEMPORAL_ADDRESS = server.address
    yield server
    server.stop()


@pytest.mark.chaos
def test_temporal_server_restarted_mid_run(own_server, spawn_worker, worker_env):
    rows = 10_000
    Item.objects.bulk_create((Item(value=i) for i in range(rows)), batch_size=10_000)
    worker_env["TEMPORAL_ADDRESS"] = own_server.address
    run = services.start("touch-items", batch_size=100, params={"sleep": "0.03"})
    spawn_worker()
    wait_until(lambda: run_row(run.pk).batches_processed >= 10, timeout=60, what="batch 10")

    own_server.stop()
    stopped_at = run_row(run.pk).batches_processed
    time.sleep(3)
    own_server.start()

    wait_until(lambda: run_row(run.pk).is_finished, timeout=180, what="the run to finish")
    assert stopped_at < rows // 100
    assert_every_row_once(run.pk, rows)


def test_resume_and_pause_arriving_together_end_paused(temporal):
    Item.objects.bulk_create(Item(value=i) for i in range(5_000))
    run = services.start("touch-items", batch_size=50, params={"sleep": "0.05"})
    with InProcessWorker(temporal.task_queue):
        wait_until(lambda: run_row(run.pk).batches_processed >= 1, what="the first batch")
        services.pause(run.pk, by="test")
        wait_until(lambda: run_row(run.pk).status == Status.PAUSED, timeout=30, what="paused")

    # No worker: both signals wait in the history, and the next worker sees them together.
    services.resume(run.pk, by="test")
    services.pause(run.pk, by="test")
    with InProcessWorker(temporal.task_queue):
        try:
            wait_until(lambda: run_row(run.pk).status == Status.PAUSED, timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {describe(run.pk)}") from None
        held = run_row(run.pk).batches_processed
        time.sleep(1)
        assert run_row(run.pk).batches_processed == held

        services.resume(run.pk, by="test")
        wait_until(lambda: run_row(run.pk).is_finished, timeout=120, what="the run to finish")
    assert_every_row_once(run.pk, 5_000)
