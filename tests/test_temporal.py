"""The workflow and its activity against a real dev server, with an in-process worker."""

from __future__ import annotations

import pytest

from backfills import services
from backfills.models import BackfillRun, Status
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
