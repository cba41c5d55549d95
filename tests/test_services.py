"""The service layer called directly: every operator action on a run (pause, resume, cancel,
retry, reconcile), what it refuses and what it leaves unchanged, against a real Temporal dev
server and real workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from backfills import services, signals
from backfills.exceptions import (
    IllegalTransition,
    OutOfSync,
    RunConflict,
    RunNotFound,
    UnknownBackfill,
)
from backfills.models import BackfillRun, Status, StatusChange
from backfills.registry import registry
from backfills.signals import backfill_started
from backfills.temporal.client import with_client
from tests.temporal_support import InProcessWorker, wait_until
from tests.testapp.backfills import TouchItems
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


# --- helpers ----------------------------------------------------------------------------


def row(run_id: int) -> BackfillRun:
    return BackfillRun.objects.get(pk=run_id)


def log(run_id: int) -> list[tuple[str, str, str]]:
    """The run's status changes as (from, to, changed_by), oldest first."""
    return list(
        StatusChange.objects.filter(run_id=run_id).values_list(
            "from_status", "to_status", "changed_by"
        )
    )


def error_of(run: BackfillRun) -> dict[str, Any]:
    assert run.error is not None, f"run {run.pk} has no error"
    return dict(run.error)


def make_items(count: int) -> list[int]:
    Item.objects.bulk_create(Item(value=i) for i in range(count))
    return list(Item.objects.order_by("id").values_list("id", flat=True))


def visit_counts() -> set[int]:
    return set(Item.objects.values_list("visits", flat=True))


def reaches(run_id: int, status: Status, timeout: float = 30) -> BackfillRun:
    return wait_until(
        lambda: (run := row(run_id)).status == status and run,
        timeout=timeout,
        what=f"run {run_id} to become {status}",
    )


def has_batches(run_id: int, count: int) -> None:
    wait_until(lambda: row(run_id).batches_processed >= count, timeout=30, what=f"{count} batches")


def signals_received(workflow_id: str) -> list[str]:
    """Names of the signals the workflow's latest execution got, from its history (needs no
    worker, unlike a query)."""

    async def fetch(client: Client) -> list[str]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        signaled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        return [
            event.workflow_execution_signaled_event_attributes.signal_name
            for event in history.events
            if event.event_type == signaled
        ]

    return with_client(fetch)


def execution(workflow_id: str) -> tuple[str, WorkflowExecutionStatus | None]:
    """(run id, status) of the workflow's latest execution."""

    async def describe(client: Client) -> tuple[str, WorkflowExecutionStatus | None]:
        description = await client.get_workflow_handle(workflow_id).describe()
        return description.run_id, description.status

    return with_client(describe)


def terminate(workflow_id: str) -> None:
    async def stop(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).terminate(reason="test")

    with_client(stop)


def cancel_in_temporal(workflow_id: str) -> None:
    async def cancel(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).cancel()

    with_client(cancel)


def waiting_run(status: Status = Status.PENDING, name: str = "touch-items") -> BackfillRun:
    """A run with a real, open workflow that no worker picks up, moved to `status`."""
    run = services.start(name, batch_size=10)
    BackfillRun.objects.filter(pk=run.pk).update(status=status)
    return row(run.pk)


def snapshot(run: BackfillRun) -> tuple[Any, ...]:
    fresh = row(run.pk)
    return (
        fresh.status,
        fresh.workflow_run_id,
        fresh.finished_at,
        fresh.error,
        StatusChange.objects.filter(run=fresh).count(),
    )


# --- illegal actions: refused, naming the run and its status, nothing changed ----------


ACTIONS = {
    "pause": services.pause,
    "resume": services.resume,
    "cancel": services.cancel,
    "retry": services.retry,
}

ILLEGAL = [
    ("pause", Status.PAUSED, "it is paused. It can be: resume, cancel."),
    ("pause", Status.PAUSING, "it is already pausing. It can be: resume, cancel."),
    ("pause", Status.SUCCEEDED, "it is succeeded. It is finished."),
    ("pause", Status.FAILED, "it is failed. It can be: retry."),
    ("pause", Status.CANCELLED, "it is cancelled. It is finished."),
    ("resume", Status.RUNNING, "it is already running. It can be: pause, cancel."),
    ("resume", Status.PENDING, "it is pending. It can be: pause, cancel."),
    ("resume", Status.SUCCEEDED, "it is succeeded. It is finished."),
    ("cancel", Status.CANCELLED, "it is cancelled. It is finished."),
    ("cancel", Status.SUCCEEDED, "it is succeeded. It is finished."),
    ("cancel", Status.FAILED, "it is failed. It can be: retry."),
    ("retry", Status.RUNNING, "it is running. It can be: pause, cancel."),
    ("retry", Status.SUCCEEDED, "it is succeeded. It is finished."),
    ("retry", Status.CANCELLED, "it is cancelled. It is finished."),
]


@pytest.mark.parametrize(
    ("action", "status", "detail"), ILLEGAL, ids=[f"{a}-{s}" for a, s, _ in ILLEGAL]
)
def test_illegal_action_is_refused_and_changes_nothing(temporal, action, status, detail):
    run = waiting_run(status)
    before = snapshot(run)

    with pytest.raises(IllegalTransition) as excinfo:
        ACTIONS[action](run.pk, by="ops")

    assert str(excinfo.value) == f"Cannot {action} run {run.pk} (touch-items): {detail}"
    assert snapshot(run) == before
    assert signals_received(run.workflow_id) == []
    # A refused retry starts no new execution either.
    assert execution(run.workflow_id) == (run.workflow_run_id, WorkflowExecutionStatus.RUNNING)


@pytest.mark.parametrize(("action", "detail"), [("pause", "it is"), ("cancel", "it is already")])
def test_action_on_a_cancelling_run_is_refused_and_changes_nothing(temporal, action, detail):
    run = waiting_run(Status.CANCELLING)
    before = snapshot(run)

    with pytest.raises(IllegalTransition) as excinfo:
        ACTIONS[action](run.pk, by="ops")

    assert str(excinfo.value).startswith(
        f"Cannot {action} run {run.pk} (touch-items): {detail} cancelling."
    )
    assert snapshot(run) == before
    assert signals_received(run.workflow_id) == []


def test_refusal_does_not_call_a_cancelling_run_finished():
    run = BackfillRun.objects.create(
        backfill_name="touch-items", batch_size=10, status=Status.CANCELLING
    )

    with pytest.raises(IllegalTransition) as excinfo:
        services.pause(run.pk, by="ops")

    assert "finished" not in str(excinfo.value)
    assert "Wait for it to stop." in str(excinfo.value)


def test_legal_action_is_seen_by_the_workflow(temporal):
    """The counterpart of the test above: an accepted pause does reach the workflow."""
    run = waiting_run()

    paused = services.pause(run.pk, by="ops")

    assert paused.status == Status.PAUSING
    assert row(run.pk).status == Status.PAUSING
    assert log(run.pk)[-1] == ("pending", "pausing", "ops")
    assert signals_received(run.workflow_id) == ["pause"]


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_unknown_run_is_not_found(action):
    BackfillRun.objects.create(backfill_name="touch-items", batch_size=10)
    missing = BackfillRun.objects.get().pk + 1000

    with pytest.raises(RunNotFound, match=f"No run {missing}. See the recent runs"):
        ACTIONS[action](missing, by="ops")

    assert BackfillRun.objects.count() == 1
    assert StatusChange.objects.count() == 0


@pytest.fixture
def status_changes() -> Iterator[list[tuple[int, str, str]]]:
    """(run id, from, to) of every `status_changed` signal sent while the test runs."""
    sent: list[tuple[int, str, str]] = []

    def receiver(sender: Any, run: BackfillRun, from_status: str, to_status: str, **kw: Any):
        sent.append((run.pk, str(from_status), str(to_status)))

    signals.status_changed.connect(receiver)
    try:
        yield sent
    finally:
        signals.status_changed.disconnect(receiver)


def test_pause_of_a_run_missing_in_temporal_is_out_of_sync_and_rolls_back(temporal, status_changes):
    run = waiting_run()
    terminate(run.workflow_id)
    before = snapshot(run)

    with pytest.raises(OutOfSync) as excinfo:
        services.pause(run.pk, by="ops")

    message = str(excinfo.value)
    assert f"Run {run.pk}'s workflow {run.workflow_id!r} is not running in Temporal" in message
    assert "manage.py reconcile_backfills" in message
    assert snapshot(run) == before
    assert row(run.pk).status == Status.PENDING
    assert status_changes == []


# --- pause and resume -------------------------------------------------------------------


def assert_nothing_repeated(run: BackfillRun) -> None:
    assert Item.objects.filter(visits=1).count() == run.rows_processed
    assert not Item.objects.filter(visits__gt=1).exists()


def test_pause_then_resume_repeats_and_skips_nothing(worker):
    make_items(2000)
    run = services.start("touch-items", batch_size=50, params={"sleep": "0.1"}, created_by="alice")
    has_batches(run.pk, 3)

    assert services.pause(run.pk, by="ops").status == Status.PAUSING
    paused = reaches(run.pk, Status.PAUSED)

    assert 0 < paused.rows_processed < 2000
    assert_nothing_repeated(paused)
    time.sleep(1)
    still = row(run.pk)
    assert (still.status, still.rows_processed) == (Status.PAUSED, paused.rows_processed)
    assert Item.objects.filter(visits=1).count() == paused.rows_processed

    assert services.resume(run.pk, by="ops").status == Status.RUNNING
    done = reaches(run.pk, Status.SUCCEEDED)

    assert done.rows_processed == 2000
    assert visit_counts() == {1}
    assert log(run.pk) == [
        ("", "pending", "alice"),
        ("pending", "running", "worker"),
        ("running", "pausing", "ops"),
        ("pausing", "paused", "worker"),
        ("paused", "running", "ops"),
        ("running", "succeeded", "worker"),
    ]


def test_pause_of_a_pending_run_holds_it_until_resumed(temporal):
    make_items(100)
    started = []

    def on_started(sender, run, **kwargs):
        started.append(run.pk)

    backfill_started.connect(on_started)
    run = services.start("touch-items", batch_size=10)

    assert services.pause(run.pk, by="ops").status == Status.PAUSING
    with InProcessWorker(temporal.task_queue):
        paused = reaches(run.pk, Status.PAUSED)
        time.sleep(0.5)

        assert row(run.pk).status == Status.PAUSED
        assert paused.rows_processed == 0 and paused.batches_processed == 0
        assert visit_counts() == {0}

        services.resume(run.pk, by="ops")
        done = reaches(run.pk, Status.SUCCEEDED)

    assert done.rows_processed == 100
    assert visit_counts() == {1}
    assert [(old, new) for old, new, _ in log(run.pk)] == [
        ("", "pending"),
        ("pending", "pausing"),
        ("pausing", "paused"),
        ("paused", "running"),
        ("running", "succeeded"),
    ]
    backfill_started.disconnect(on_started)
    # It started when a worker first took it, after the resume.
    assert started == [run.pk]


# --- cancel -----------------------------------------------------------------------------


def test_cancel_of_a_running_run_keeps_the_committed_work(worker):
    make_items(1000)
    run = services.start("touch-items", batch_size=25, params={"sleep": "0.05"})
    has_batches(run.pk, 2)

    assert services.cancel(run.pk, by="ops").status == Status.CANCELLING
    done = reaches(run.pk, Status.CANCELLED)

    assert done.finished_at is not None
    assert 0 < done.rows_processed < 1000
    assert_nothing_repeated(done)
    # Nothing runs on after the cancel took effect.
    time.sleep(0.5)
    assert row(run.pk).rows_processed == done.rows_processed
    assert Item.objects.filter(visits=1).count() == done.rows_processed
    assert log(run.pk)[-2:] == [
        ("running", "cancelling", "ops"),
        ("cancelling", "cancelled", "worker"),
    ]


def test_cancel_of_a_paused_run(worker):
    make_items(1000)
    run = services.start("touch-items", batch_size=25, params={"sleep": "0.05"})
    has_batches(run.pk, 1)
    services.pause(run.pk, by="ops")
    paused = reaches(run.pk, Status.PAUSED)

    assert services.cancel(run.pk, by="ops").status == Status.CANCELLING
    done = reaches(run.pk, Status.CANCELLED)

    assert done.finished_at is not None
    assert done.rows_processed == paused.rows_processed
    assert_nothing_repeated(done)
    assert log(run.pk)[-2:] == [
        ("paused", "cancelling", "ops"),
        ("cancelling", "cancelled", "worker"),
    ]


# --- retry ------------------------------------------------------------------------------


def workflow_closed(workflow_id: str) -> bool:
    return execution(workflow_id)[1] != WorkflowExecutionStatus.RUNNING


def test_retry_after_fixing_the_cause_continues_from_the_failing_batch(worker, settings):
    settings.BACKFILLS_MAX_ATTEMPTS = 2
    ids = make_items(500)
    poison = ids[250]
    run = services.start("touch-items", batch_size=100, params={"poison_id": str(poison)})
    failed = reaches(run.pk, Status.FAILED)
    assert error_of(failed)["cursor"] == {"id": ids[199]}
    assert failed.rows_processed == 200
    # The workflow closes a moment after recording the failure.
    Item.objects.filter(pk=poison).delete()
    # No waiting for the failed workflow to close: retry waits for that itself.
    retried = services.retry(run.pk, by="ops")

    assert retried.status == Status.PENDING
    assert retried.workflow_run_id and retried.workflow_run_id != failed.workflow_run_id
    assert retried.finished_at is None
    assert row(run.pk).error is None, "a retried run starts without the old error"
    done = reaches(run.pk, Status.SUCCEEDED)
    assert done.rows_processed == Item.objects.count() == 499
    assert visit_counts() == {1}
    assert done.error is None
    assert ("failed", "pending", "ops") in log(run.pk)
    assert execution(run.workflow_id)[0] == retried.workflow_run_id


def test_retry_while_another_run_is_active_is_refused(temporal):
    failed = BackfillRun.objects.create(
        backfill_name="touch-items",
        batch_size=10,
        status=Status.FAILED,
        workflow_id=services.workflow_id_for("touch-items"),
        workflow_run_id="old",
    )
    active = waiting_run()
    before = snapshot(failed)

    with pytest.raises(RunConflict) as excinfo:
        services.retry(failed.pk, by="ops")

    assert f"already has an active run: #{active.pk} (pending)" in str(excinfo.value)
    assert snapshot(failed) == before
    assert row(active.pk).status == Status.PENDING
    assert execution(active.workflow_id) == (
        active.workflow_run_id,
        WorkflowExecutionStatus.RUNNING,
    )


# --- start ------------------------------------------------------------------------------


def test_two_concurrent_starts_make_exactly_one_run(temporal):
    barrier = threading.Barrier(2)
    outcomes: list[BackfillRun | Exception] = []

    def start() -> None:
        try:
            barrier.wait(10)
            outcomes.append(services.start("touch-items", batch_size=10))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    runs = [outcome for outcome in outcomes if isinstance(outcome, BackfillRun)]
    errors = [outcome for outcome in outcomes if not isinstance(outcome, BackfillRun)]
    assert len(runs) == 1 and len(errors) == 1, outcomes
    assert isinstance(errors[0], RunConflict), errors
    assert f"already has an active run: #{runs[0].pk}" in str(errors[0])
    assert BackfillRun.objects.count() == 1
    assert execution(runs[0].workflow_id)[0] == runs[0].workflow_run_id


def test_dry_run_counts_every_row_and_changes_none(worker):
    make_items(250)

    run = services.start("touch-items", batch_size=50, dry_run=True)
    done = reaches(run.pk, Status.SUCCEEDED)

    assert done.dry_run is True
    assert done.rows_processed == 250 and done.batches_processed == 5
    assert done.cursor == {"id": Item.objects.latest("id").pk}
    assert visit_counts() == {0}


# --- hooks and signals ------------------------------------------------------------------

HOOK_CALLS: list[str] = []


class HookedItems(TouchItems):
    name = "hooked-items"

    def on_start(self, run: Any) -> None:
        HOOK_CALLS.append(f"start:{run.status}")

    def on_pause(self, run: Any) -> None:
        HOOK_CALLS.append(f"pause:{run.status}")

    def on_resume(self, run: Any) -> None:
        HOOK_CALLS.append(f"resume:{run.status}")

    def on_complete(self, run: Any) -> None:
        HOOK_CALLS.append(f"complete:{run.status}")


class BrokenHooks(TouchItems):
    name = "broken-hooks"

    def _raise(self, run: Any) -> None:
        HOOK_CALLS.append("raised")
        raise RuntimeError("hook failed")

    on_start = on_pause = on_resume = on_complete = _raise


class RemovedLater(TouchItems):
    name = "removed-later"


@pytest.fixture
def hooked() -> Iterator[list[str]]:
    """Registers the backfills above for one test; returns the hook calls they make."""
    saved = dict(registry._backfills)
    for backfill_class in (HookedItems, BrokenHooks, RemovedLater):
        registry.register(backfill_class)
    HOOK_CALLS.clear()
    try:
        yield HOOK_CALLS
    finally:
        registry._backfills.clear()
        registry._backfills.update(saved)
        HOOK_CALLS.clear()


def pause_resume_complete(name: str, hook_calls: list[str], pause_hook: str) -> BackfillRun:
    make_items(200)
    run = services.start(name, batch_size=10, params={"sleep": "0.05"})
    has_batches(run.pk, 1)
    services.pause(run.pk, by="ops")
    reaches(run.pk, Status.PAUSED)
    # The hook runs just after the status commits, in the worker's thread.
    wait_until(lambda: pause_hook in hook_calls, timeout=10, what="the pause hook")
    services.resume(run.pk, by="ops")
    return reaches(run.pk, Status.SUCCEEDED)


def test_hooks_and_signals_fire_in_order(worker, hooked, status_changes):
    events: list[tuple[str, Any, int]] = []

    def started(sender: Any, run: BackfillRun, **kw: Any) -> None:
        events.append(("started", sender, run.pk))

    def completed(sender: Any, run: BackfillRun, **kw: Any) -> None:
        events.append(("completed", sender, run.pk))

    signals.backfill_started.connect(started)
    signals.backfill_completed.connect(completed)
    try:
        run = pause_resume_complete("hooked-items", hooked, "pause:paused")
        wait_until(lambda: len(events) == 2, timeout=10, what="the completed signal")
    finally:
        signals.backfill_started.disconnect(started)
        signals.backfill_completed.disconnect(completed)

    wait_until(lambda: len(hooked) == 4, timeout=10, what="the complete hook")
    assert hooked == ["start:running", "pause:paused", "resume:running", "complete:succeeded"]
    assert events == [("started", HookedItems, run.pk), ("completed", HookedItems, run.pk)]
    assert status_changes == [
        (run.pk, "pending", "running"),
        (run.pk, "running", "pausing"),
        (run.pk, "pausing", "paused"),
        (run.pk, "paused", "running"),
        (run.pk, "running", "succeeded"),
    ]


def test_hooks_and_receivers_that_raise_do_not_break_the_run(worker, hooked):
    def broken(**kw: Any) -> None:
        raise RuntimeError("receiver failed")

    signals.status_changed.connect(broken)
    try:
        done = pause_resume_complete("broken-hooks", hooked, "raised")
    finally:
        signals.status_changed.disconnect(broken)

    wait_until(lambda: len(hooked) == 4, timeout=10, what="every hook")
    assert done.status == Status.SUCCEEDED
    assert done.rows_processed == 200
    assert visit_counts() == {1}


def test_a_retry_is_refused_when_the_backfill_cannot_run_any_more(worker, settings, hooked):
    settings.BACKFILLS_MAX_ATTEMPTS = 2
    ids = make_items(50)
    run = services.start("removed-later", batch_size=10, params={"poison_id": str(ids[25])})
    first = reaches(run.pk, Status.FAILED)
    assert error_of(first)["class"] == "builtins.ValueError"
    wait_until(lambda: workflow_closed(run.workflow_id), timeout=10, what="the workflow")
    # A deploy removed the backfill: the retry now fails for another reason.
    registry.unregister("removed-later")
    changes_before = log(run.pk)

    with pytest.raises(UnknownBackfill, match="removed-later"):
        services.retry(run.pk, by="ops")

    again = row(run.pk)
    assert again.status == Status.FAILED
    assert error_of(again)["class"] == "builtins.ValueError"
    assert log(run.pk) == changes_before


# --- reconcile --------------------------------------------------------------------------


def test_reconcile_fails_a_running_run_whose_workflow_was_terminated(temporal):
    run = waiting_run(Status.RUNNING)
    BackfillRun.objects.filter(pk=run.pk).update(cursor={"id": 7})
    terminate(run.workflow_id)

    changes = services.reconcile()

    assert [(c.run.pk, c.before, c.after) for c in changes] == [(run.pk, "running", "failed")]
    assert "TERMINATED" in changes[0].reason
    assert run.workflow_id in changes[0].reason
    failed = row(run.pk)
    assert failed.status == Status.FAILED
    assert failed.finished_at is not None
    assert error_of(failed)["class"] == "OutOfSync"
    assert error_of(failed)["cursor"] == {"id": 7}
    assert log(run.pk)[-1] == ("running", "failed", "reconcile_backfills")
    # Reconciled once; a second pass finds nothing left to do.
    assert services.reconcile() == []


def test_reconcile_fails_a_paused_run_whose_workflow_does_not_exist(temporal):
    run = BackfillRun.objects.create(
        backfill_name="touch-items",
        batch_size=10,
        status=Status.PAUSED,
        workflow_id=f"{temporal.workflow_id_prefix}never-started",
    )

    changes = services.reconcile(by="ops")

    assert [(c.before, c.after) for c in changes] == [("paused", "failed")]
    assert "does not exist in Temporal" in changes[0].reason
    assert [(old, new, by) for old, new, by in log(run.pk)] == [
        ("paused", "cancelling", "ops"),
        ("cancelling", "failed", "ops"),
    ]


def test_reconcile_leaves_runs_whose_workflow_is_running(temporal):
    kept = waiting_run(Status.RUNNING)
    gone = waiting_run(Status.RUNNING, name="touch-events")
    terminate(gone.workflow_id)
    before = snapshot(kept)

    changes = services.reconcile()

    assert [change.run.pk for change in changes] == [gone.pk]
    assert snapshot(kept) == before
    assert services.reconcile() == []
    assert snapshot(kept) == before


def test_cancel_in_temporal_is_recorded_by_the_workflow(worker):
    make_items(1000)
    run = services.start("touch-items", batch_size=25, params={"sleep": "0.05"})
    has_batches(run.pk, 2)

    cancel_in_temporal(run.workflow_id)
    done = reaches(run.pk, Status.CANCELLED)

    assert done.finished_at is not None
    assert 0 < done.rows_processed < 1000
    assert_nothing_repeated(done)
    assert log(run.pk)[-2:] == [
        ("running", "cancelling", "worker"),
        ("cancelling", "cancelled", "worker"),
    ]
    wait_until(lambda: workflow_closed(run.workflow_id), timeout=10, what="the workflow")
    assert execution(run.workflow_id)[1] == WorkflowExecutionStatus.CANCELED
    assert services.reconcile() == []


def test_stale_lists_working_runs_without_a_recent_heartbeat():
    old = timezone.now() - timedelta(minutes=10)
    stale = BackfillRun.objects.create(
        backfill_name="a", batch_size=1, status=Status.RUNNING, last_heartbeat_at=old
    )
    BackfillRun.objects.create(
        backfill_name="b", batch_size=1, status=Status.RUNNING, last_heartbeat_at=timezone.now()
    )
    BackfillRun.objects.create(
        backfill_name="c", batch_size=1, status=Status.PAUSED, last_heartbeat_at=old
    )

    found = BackfillRun.objects.stale(timedelta(minutes=1))

    assert list(found) == [stale]


def test_start_refuses_while_temporal_still_runs_an_earlier_workflow(temporal):
    make_items(10)
    earlier = services.start("touch-items", batch_size=10)  # no worker: its workflow waits
    # The database lost track of it (say, edited by hand); Temporal has not.
    BackfillRun.objects.filter(pk=earlier.pk).update(status=Status.CANCELLED)

    with pytest.raises(RunConflict, match="already has an open workflow"):
        services.start("touch-items", batch_size=10)

    assert BackfillRun.objects.count() == 1
