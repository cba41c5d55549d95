"""pause_backfill, resume_backfill, cancel_backfill, retry_backfill, reconcile_backfills and
start_backfill --dry-run: what they print, what they refuse, and how a real `manage.py`
process exits."""

from __future__ import annotations

import getpass
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from temporalio.client import Client

from backfills import services
from backfills.models import BackfillRun, Status, StatusChange
from backfills.temporal.client import with_client
from tests.command_support import assert_clean_failure, manage, refused
from tests.temporal_support import wait_until
from tests.testapp.models import Item

CONTROL_COMMANDS = ["pause_backfill", "resume_backfill", "cancel_backfill", "retry_backfill"]
BY = f"{getpass.getuser()} (manage.py)"


# --- helpers ----------------------------------------------------------------------------


def call(*args: str) -> str:
    """Run a command in this process; return what it wrote to stdout."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def status_of(run_id: int) -> str:
    return BackfillRun.objects.get(pk=run_id).status


def last_change(run_id: int) -> tuple[str, str, str]:
    change = StatusChange.objects.filter(run_id=run_id).last()
    assert change is not None
    return change.from_status, change.to_status, change.changed_by


def finished_run(status: Status = Status.SUCCEEDED) -> BackfillRun:
    """A row only: refusals happen before any call to Temporal."""
    return BackfillRun.objects.create(backfill_name="touch-items", batch_size=10, status=status)


def terminate(workflow_id: str) -> None:
    async def stop(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).terminate(reason="test")

    with_client(stop)


# --- pause, resume, cancel, retry: the new status ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_pause_resume_and_cancel_print_the_new_status(temporal):
    run = services.start("touch-items", batch_size=10)

    out = call("pause_backfill", str(run.pk))
    assert out == f"Run {run.pk} (touch-items) pause requested: now pausing.\n"
    assert status_of(run.pk) == Status.PAUSING
    assert last_change(run.pk) == ("pending", "pausing", BY)

    out = call("resume_backfill", str(run.pk))
    assert out == f"Run {run.pk} (touch-items) resumed: now running.\n"
    assert status_of(run.pk) == Status.RUNNING
    assert last_change(run.pk) == ("pausing", "running", BY)

    out = call("cancel_backfill", str(run.pk))
    assert out == f"Run {run.pk} (touch-items) cancel requested: now cancelling.\n"
    assert status_of(run.pk) == Status.CANCELLING
    assert last_change(run.pk) == ("running", "cancelling", BY)


@pytest.mark.django_db(transaction=True)
def test_retry_prints_the_new_status_and_starts_a_workflow(temporal):
    run = BackfillRun.objects.create(
        backfill_name="touch-items",
        batch_size=10,
        status=Status.FAILED,
        workflow_id=services.workflow_id_for("touch-items"),
        finished_at=timezone.now(),
    )

    out = call("retry_backfill", str(run.pk))

    assert out == f"Run {run.pk} (touch-items) retried: now pending.\n"
    retried = BackfillRun.objects.get(pk=run.pk)
    assert retried.status == Status.PENDING
    assert retried.workflow_run_id
    assert retried.finished_at is None
    assert last_change(run.pk) == ("failed", "pending", BY)


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "status", "expected"),
    [
        ("pause_backfill", Status.SUCCEEDED, "Cannot pause run {pk} (touch-items): it is "),
        ("resume_backfill", Status.SUCCEEDED, "Cannot resume run {pk} (touch-items): it is "),
        ("cancel_backfill", Status.CANCELLED, "Cannot cancel run {pk} (touch-items): it is "),
        ("retry_backfill", Status.SUCCEEDED, "Cannot retry run {pk} (touch-items): it is "),
    ],
)
def test_refused_action_is_a_command_error_and_changes_nothing(command, status, expected):
    run = finished_run(status)

    message = refused(command, str(run.pk))

    assert message == expected.format(pk=run.pk) + f"{status}. It is finished."
    assert status_of(run.pk) == status
    assert not StatusChange.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("command", CONTROL_COMMANDS)
def test_non_integer_run_id_is_an_argument_error(command):
    message = refused(command, "abc")
    assert "RUN_ID must be a run's number, got 'abc'" in message


@pytest.mark.django_db
@pytest.mark.parametrize("command", CONTROL_COMMANDS)
def test_unknown_run_id_is_refused(command):
    run = finished_run()

    message = refused(command, str(run.pk + 100))

    assert message.startswith(f"No run {run.pk + 100}.")
    assert "backfill_status" in message


# --- as real processes ------------------------------------------------------------------


def test_pause_in_a_process_prints_the_new_status(worker_env):
    run = services.start("touch-items", batch_size=10)

    result = manage(worker_env, "pause_backfill", str(run.pk))

    assert result.returncode == 0, result
    assert f"Run {run.pk} (touch-items) pause requested: now pausing." in result.stdout
    assert status_of(run.pk) == Status.PAUSING


def test_refusal_in_a_process_exits_1_without_a_traceback(worker_env):
    run = finished_run(Status.FAILED)

    result = manage(worker_env, "pause_backfill", str(run.pk))

    assert_clean_failure(
        result, 1, f"CommandError: Cannot pause run {run.pk} (touch-items): it is failed."
    )
    assert "It can be: retry." in result.stderr
    assert result.stdout == ""
    assert status_of(run.pk) == Status.FAILED


def test_unknown_run_in_a_process_exits_1(worker_env):
    result = manage(worker_env, "resume_backfill", "4242")

    assert_clean_failure(result, 1, "CommandError: No run 4242.")


def test_non_integer_run_id_in_a_process_exits_2(worker_env):
    result = manage(worker_env, "cancel_backfill", "seven")

    assert_clean_failure(result, 2, "argument RUN_ID: RUN_ID must be a run's number, got 'seven'")


# --- reconcile_backfills ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reconcile_with_every_workflow_running_changes_nothing(temporal):
    run = services.start("touch-items", batch_size=10)

    out = call("reconcile_backfills")

    assert out == "Every active run's workflow is running; nothing to change.\n"
    assert status_of(run.pk) == Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_reconcile_prints_stale_runs_and_what_it_changed(temporal):
    run = services.start("touch-items", batch_size=10)
    silent_since = timezone.now() - timedelta(hours=1)
    BackfillRun.objects.filter(pk=run.pk).update(
        status=Status.RUNNING, last_heartbeat_at=silent_since
    )
    terminate(run.workflow_id)

    out = call("reconcile_backfills")

    lines = out.splitlines()
    assert lines[0] == (
        f"Run {run.pk} (touch-items, running): no heartbeat since {silent_since}"
    ), out
    assert lines[1] == (
        f"Run {run.pk} (touch-items): running -> failed: workflow {run.workflow_id!r} "
        f"ended TERMINATED"
    ), out
    assert "nothing to change" not in out
    assert status_of(run.pk) == Status.FAILED
    assert last_change(run.pk) == ("running", "failed", "reconcile_backfills")


# --- start_backfill --dry-run -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dry_run_with_wait_reports_the_rows_and_changes_none(worker):
    Item.objects.bulk_create(Item(value=i) for i in range(30))
    wait_until(services.task_queue_pollers, timeout=10, what="the worker to poll")

    out = call(
        "start_backfill",
        "touch-items",
        "--dry-run",
        "--batch-size",
        "10",
        "--wait",
        "--poll-interval",
        "0.1",
    )

    run = BackfillRun.objects.get()
    assert run.dry_run and run.status == Status.SUCCEEDED
    assert f"Started dry run {run.pk} of 'touch-items'" in out
    assert (
        f"Dry run {run.pk} succeeded: 30 rows would have been processed in 3 batches; "
        f"nothing was changed." in out
    )
    assert set(Item.objects.values_list("visits", flat=True)) == {0}
