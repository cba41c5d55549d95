"""The whole stack as an operator runs it: real worker processes and `manage.py` commands."""

from __future__ import annotations

import pytest

from backfills.models import BackfillRun, Status
from tests.command_support import manage
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_backfill_wait_processes_every_row_exactly_once(spawn_worker, worker_env):
    Item.objects.bulk_create((Item(value=i) for i in range(25_000)), batch_size=5000)
    spawn_worker()

    result = manage(worker_env, "start_backfill", "touch-items", "--batch-size", "500", "--wait")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "25,000/25,000 rows" in result.stdout
    assert "Run 1 succeeded: 25,000 rows in 50 batches." in result.stdout.replace(
        f"Run {BackfillRun.objects.get().pk}", "Run 1"
    )
    assert "Traceback" not in result.stderr
    assert list(Item.objects.values_list("visits", flat=True).distinct()) == [1]
    run = BackfillRun.objects.get()
    assert run.status == Status.SUCCEEDED
    assert (run.rows_processed, run.batches_processed) == (25_000, 50)
    assert run.cursor == {"id": Item.objects.latest("id").pk}


def test_start_backfill_wait_exits_non_zero_when_the_run_fails(spawn_worker, worker_env):
    Item.objects.bulk_create(Item(value=i) for i in range(300))
    poison = Item.objects.order_by("id")[150].pk
    spawn_worker()
    env = {**worker_env, "BACKFILLS_MAX_ATTEMPTS": "2"}

    result = manage(
        env, "start_backfill", "touch-items", "--batch-size", "100", "--param",
        f"poison_id={poison}", "--wait",
    )  # fmt: skip

    assert result.returncode == 1
    assert f"ended failed: builtins.ValueError: poisoned row {poison}" in result.stderr
    assert "Traceback" not in result.stderr
    run = BackfillRun.objects.get()
    assert run.status == Status.FAILED
    assert run.rows_processed == 100
