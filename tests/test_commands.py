"""The management commands: bad input refused with nothing written, runs started and watched,
listings and status, both through `call_command` and as real `manage.py` processes."""

from __future__ import annotations

import gc
import io
import json
import weakref
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import QuerySet

from backfills import ModelBackfill, services
from backfills.models import BackfillRun, Status
from backfills.registry import registry
from backfills.temporal.worker import YOUNG_COLLECTION_THRESHOLD, tune_garbage_collection
from tests.command_support import assert_clean_failure, manage, refused
from tests.temporal_support import wait_until
from tests.testapp.models import Item, Tagged

# --- helpers ----------------------------------------------------------------------------


def call(*args: str) -> tuple[str, str]:
    """Run a command in this process; return what it wrote to stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def no_runs() -> bool:
    return BackfillRun.objects.count() == 0


# --- throwaway backfills ----------------------------------------------------------------


class LabelCursor(ModelBackfill):
    """A cursor on a column that is not unique."""

    name = "label-cursor"
    model = Tagged
    cursor_fields = ("label",)


class OrderedItems(ModelBackfill):
    name = "ordered-items"
    model = Item

    def get_queryset(self) -> QuerySet[Item]:
        return Item.objects.order_by("-value")


class SlicedItems(ModelBackfill):
    name = "sliced-items"
    model = Item

    def get_queryset(self) -> QuerySet[Item]:
        return Item.objects.all()[:10]


@pytest.fixture
def throwaway_backfills() -> Iterator[None]:
    snapshot = dict(registry._backfills)
    for backfill_class in (LabelCursor, OrderedItems, SlicedItems):
        registry.register(backfill_class)
    try:
        yield
    finally:
        registry._backfills.clear()
        registry._backfills.update(snapshot)


# --- start_backfill: bad input, nothing written -----------------------------------------


@pytest.mark.django_db
def test_unknown_backfill_is_refused_listing_the_known_ones(temporal):
    message = refused("start_backfill", "no-such-backfill")

    assert "Unknown backfill 'no-such-backfill'" in message
    assert "touch-items" in message
    assert "copy-comments-to-search" in message
    assert no_runs()


@pytest.mark.django_db
def test_param_without_equals_is_an_argument_error(temporal):
    message = refused("start_backfill", "touch-items", "--param", "sleep")

    assert "--param" in message
    assert "expected KEY=VALUE, got 'sleep'" in message
    assert no_runs()


@pytest.mark.django_db
def test_param_with_empty_key_is_an_argument_error(temporal):
    message = refused("start_backfill", "touch-items", "--param", "=1")

    assert "expected KEY=VALUE" in message
    assert no_runs()


@pytest.mark.django_db
def test_unknown_parameter_is_refused_naming_it(temporal):
    message = refused("start_backfill", "touch-items", "--param", "speed=3")

    assert "Unknown parameter speed" in message
    assert "sleep, poison_id, transient" in message
    assert no_runs()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("param", "fragment"),
    [
        ("sleep=-1", "sleep: Ensure this value is greater than or equal to 0"),
        ("sleep=abc", "sleep: Enter a number"),
        ("transient=maybe", "transient: 'maybe' is not a boolean"),
        ("poison_id=x", "poison_id: Enter a whole number"),
    ],
)
def test_invalid_parameter_value_is_refused(temporal, param, fragment):
    message = refused("start_backfill", "touch-items", "--param", param)

    assert "Invalid parameters for 'touch-items'" in message
    assert fragment in message
    assert no_runs()


@pytest.mark.django_db
def test_repeated_param_is_refused(temporal):
    message = refused("start_backfill", "touch-items", "--param", "sleep=1", "--param", "sleep=2")

    assert "--param sleep given more than once" in message
    assert no_runs()


@pytest.mark.django_db
@pytest.mark.parametrize("size", ["0", "-5"])
def test_batch_size_below_one_is_refused(temporal, size):
    message = refused("start_backfill", "touch-items", "--batch-size", size)

    assert "Batch size must be an integer from 1 to" in message
    assert f"got {size}" in message
    assert no_runs()


@pytest.mark.django_db
def test_batch_size_above_the_maximum_is_refused(temporal, settings):
    settings.BACKFILLS_MAX_BATCH_SIZE = 10

    message = refused("start_backfill", "touch-items", "--batch-size", "11")

    assert "from 1 to 10 (BACKFILLS_MAX_BATCH_SIZE)" in message
    assert "got 11" in message
    assert no_runs()


@pytest.mark.django_db
def test_batch_size_that_is_not_a_number_is_an_argument_error(temporal):
    message = refused("start_backfill", "touch-items", "--batch-size", "many")

    assert "--batch-size" in message
    assert "'many'" in message
    assert no_runs()


@pytest.mark.django_db
def test_backfill_with_bad_cursor_fields_is_refused(temporal, throwaway_backfills):
    message = refused("start_backfill", "label-cursor")

    assert "cursor_fields of testapp.Tagged" in message
    assert "not unique together" in message
    assert no_runs()


@pytest.mark.django_db
def test_backfill_with_an_ordered_queryset_is_refused(temporal, throwaway_backfills):
    message = refused("start_backfill", "ordered-items")

    assert "OrderedItems.get_queryset() returns an ordered queryset" in message
    assert no_runs()


@pytest.mark.django_db
def test_backfill_with_a_sliced_queryset_is_refused(temporal, throwaway_backfills):
    message = refused("start_backfill", "sliced-items")

    assert "SlicedItems.get_queryset() returns a sliced queryset" in message
    assert no_runs()


@pytest.mark.django_db(transaction=True)
def test_temporal_unreachable_is_refused_and_the_run_rolls_back(settings):
    settings.TEMPORAL_ADDRESS = "127.0.0.1:1"

    message = refused("start_backfill", "touch-items")

    assert "Cannot reach Temporal at 127.0.0.1:1" in message
    assert no_runs()


# --- start_backfill: bad input as a real process ----------------------------------------


def test_param_without_equals_exits_2_in_a_process(worker_env):
    result = manage(worker_env, "start_backfill", "touch-items", "--param", "sleep")

    assert_clean_failure(result, 2, "argument --param: expected KEY=VALUE, got 'sleep'")
    assert no_runs()


def test_unknown_backfill_exits_non_zero_in_a_process(worker_env):
    result = manage(worker_env, "start_backfill", "no-such-backfill")

    assert_clean_failure(result, 1, "CommandError: Unknown backfill 'no-such-backfill'")
    assert "touch-items" in result.stderr
    assert no_runs()


def test_invalid_parameter_exits_non_zero_in_a_process(worker_env):
    result = manage(worker_env, "start_backfill", "touch-items", "--param", "transient=maybe")

    assert_clean_failure(result, 1, "'maybe' is not a boolean")
    assert no_runs()


def test_temporal_unreachable_exits_non_zero_in_a_process(worker_env):
    env = {**worker_env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}

    result = manage(env, "start_backfill", "touch-items")

    assert_clean_failure(result, 1, "Cannot reach Temporal at 127.0.0.1:1")
    assert no_runs()


# --- start_backfill: runs ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_start_without_a_worker_prints_the_ids_and_warns(temporal):
    out, err = call("start_backfill", "touch-items", "--batch-size", "25")

    run = BackfillRun.objects.get()
    assert run.status == Status.PENDING
    assert run.batch_size == 25
    assert run.workflow_id == f"{temporal.workflow_id_prefix}touch-items"
    assert run.workflow_run_id
    assert f"Started run {run.pk} of 'touch-items'" in out
    assert run.workflow_id in out
    assert run.workflow_run_id in out
    assert "no worker is polling the task queue" in err
    assert "run_backfill_worker" in err


@pytest.mark.django_db(transaction=True)
def test_second_run_while_one_is_active_is_refused_naming_it(temporal):
    call("start_backfill", "touch-items", "--param", "sleep=0.5")
    first = BackfillRun.objects.get()

    message = refused("start_backfill", "touch-items", "--param", "sleep=0")

    assert f"#{first.pk}" in message
    assert "already has an active run" in message
    assert BackfillRun.objects.count() == 1
    assert BackfillRun.objects.get().params == {"sleep": 0.5, "poison_id": None, "transient": False}


@pytest.mark.django_db(transaction=True)
def test_wait_shows_progress_until_the_run_succeeds(worker):
    Item.objects.bulk_create(Item(value=i) for i in range(500))
    # The worker is up; its first activity poll reaches the server a moment later.
    wait_until(services.task_queue_pollers, timeout=10, what="the worker to poll")

    out, err = call(
        "start_backfill", "touch-items", "--batch-size", "50", "--wait", "--poll-interval", "0.1"
    )

    run = BackfillRun.objects.get()
    assert run.status == Status.SUCCEEDED
    bars = [line for line in out.splitlines() if line.startswith("[")]
    assert bars, out
    assert "500/500 rows" in bars[-1]
    assert bars[-1].endswith("succeeded")
    assert f"Run {run.pk} succeeded: 500 rows in 10 batches." in out
    assert "no worker is polling" not in err
    assert set(Item.objects.values_list("visits", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_wait_on_a_run_that_fails_raises_with_the_error(worker, settings):
    settings.BACKFILLS_MAX_ATTEMPTS = 2
    Item.objects.bulk_create(Item(value=i) for i in range(30))
    poison = Item.objects.order_by("pk")[15].pk

    message = refused(
        "start_backfill",
        "touch-items",
        "--batch-size",
        "10",
        "--param",
        f"poison_id={poison}",
        "--wait",
        "--poll-interval",
        "0.1",
    )

    run = BackfillRun.objects.get()
    assert run.status == Status.FAILED
    assert f"Run {run.pk} ended failed" in message
    assert f"poisoned row {poison}" in message
    # The batch before the poisoned one committed; nothing after it.
    assert run.rows_processed == 10


# --- list_backfills ---------------------------------------------------------------------


def lines_by_name(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if not line.startswith(" ")}


@pytest.mark.django_db
def test_list_backfills_shows_model_and_latest_run_status():
    BackfillRun.objects.create(backfill_name="touch-items", batch_size=10, status=Status.FAILED)
    latest = BackfillRun.objects.create(
        backfill_name="touch-items", batch_size=10, status=Status.SUCCEEDED
    )

    out, _ = call("list_backfills")

    lines = lines_by_name(out)
    assert set(lines) >= {
        "copy-comments-to-search",
        "fill-body-length",
        "reindex-by-creation",
        "touch-items",
        "touch-odd-items",
        "touch-uuid-items",
        "touch-events",
    }
    assert "model=testapp.Item" in lines["touch-items"]
    assert f"[run {latest.pk}: succeeded]" in lines["touch-items"]
    assert "model=testapp.Event" in lines["touch-events"]
    assert "cursor=created_at,id" in lines["touch-events"]
    assert "[never run]" in lines["touch-events"]
    assert "model=example.Comment" in lines["copy-comments-to-search"]
    assert "    Increment Item.visits." in out


# --- backfill_status --------------------------------------------------------------------


@pytest.mark.django_db
def test_backfill_status_without_runs_says_so():
    out, _ = call("backfill_status")
    assert "No runs yet" in out


@pytest.mark.django_db
def test_backfill_status_lists_recent_runs():
    run = BackfillRun.objects.create(
        backfill_name="touch-items", batch_size=10, rows_processed=1234, rows_total=5000
    )

    out, _ = call("backfill_status")

    assert "No runs yet" not in out
    assert f"{run.pk}  touch-items  pending  1,234/5,000 rows" in out


@pytest.mark.django_db
def test_backfill_status_of_an_unknown_run_is_refused():
    BackfillRun.objects.create(backfill_name="touch-items", batch_size=10)
    missing = BackfillRun.objects.get().pk + 1000

    message = refused("backfill_status", str(missing))

    assert f"No run {missing}" in message


@pytest.mark.django_db
def test_backfill_status_with_a_non_integer_run_id_is_an_argument_error():
    message = refused("backfill_status", "abc")
    assert "RUN_ID must be a run's number, got 'abc'" in message


@pytest.mark.django_db(transaction=True)
def test_backfill_status_of_a_finished_run(worker):
    Item.objects.bulk_create(Item(value=i) for i in range(30))
    call("start_backfill", "touch-items", "--batch-size", "10", "--wait", "--poll-interval", "0.1")
    run = BackfillRun.objects.get()

    out, _ = call("backfill_status", str(run.pk))

    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert fields["Run"].strip() == str(run.pk)
    assert fields["Status"].strip() == "succeeded"
    assert json.loads(fields["Cursor"]) == {"id": Item.objects.latest("pk").pk}
    assert fields["Workflow"].strip() == f"{run.workflow_id} (run {run.workflow_run_id})"
    assert "30/30 rows" in fields["Progress"]
    assert fields["Batches"].strip() == "3"


# --- run_backfill_worker ----------------------------------------------------------------


def test_worker_refuses_concurrency_zero():
    with pytest.raises(CommandError, match="--concurrency: must be at least 1, got 0"):
        call("run_backfill_worker", "--concurrency", "0")


def test_worker_keeps_the_garbage_collector_off_start_up_objects_and_batches():
    class Cycle:
        pass

    garbage = Cycle()
    garbage.itself = garbage  # type: ignore[attr-defined]
    collected = weakref.ref(garbage)
    del garbage
    frozen_before, threshold_before = gc.get_freeze_count(), gc.get_threshold()
    try:
        tune_garbage_collection()

        assert collected() is None  # garbage is collected first, not kept for ever
        assert gc.get_freeze_count() > frozen_before + 10_000  # Django, the app, the SDK
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *threshold_before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold_before)


def test_worker_refuses_concurrency_zero_in_a_process(worker_env):
    result = manage(worker_env, "run_backfill_worker", "--concurrency", "0")

    assert_clean_failure(result, 2, "argument --concurrency: must be at least 1, got 0")


@pytest.mark.django_db
def test_start_backfill_refuses_a_poll_interval_that_is_not_positive():
    message = refused("start_backfill", "touch-items", "--wait", "--poll-interval", "0")

    assert "--poll-interval: must be above 0" in message
    assert BackfillRun.objects.count() == 0
