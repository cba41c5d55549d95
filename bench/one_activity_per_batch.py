"""The design the app does not use, for comparison: a workflow that runs one activity per batch
and keeps the cursor in its history (the activity's result).

Same batch as the app's `bench-transform` backfill (keyset read of 1000 items, `value * 2 + 1`
in Python, `backfills.writes.bulk_update`), in a transaction per activity. Everything else
is in its favour: an in-process worker, no run row to checkpoint, no heartbeats, a database
connection kept across activities. What remains is Temporal's price per batch: an activity
task and a workflow task, and about six history events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.worker import Worker


@dataclass
class BatchInput:
    last_id: int
    batch_size: int
    #: Rows with a larger id are left alone (the cap of the measurement).
    max_id: int


@dataclass
class LoopInput:
    batch_size: int
    max_id: int


@activity.defn(name="bench-process-one-batch")
def process_one_batch(data: BatchInput) -> int | None:
    """One batch in one transaction; the id of its last row, or None when none are left."""
    # Imported here: the workflow sandbox re-imports this module and must not load Django.
    from django.db import transaction

    from backfills.writes import bulk_update
    from tests.testapp.models import Item

    with transaction.atomic():
        items = Item.objects.filter(id__gt=data.last_id, id__lte=data.max_id).order_by("id")
        batch = list(items[: data.batch_size])
        if not batch:
            return None
        for item in batch:
            item.value = item.value * 2 + 1
        bulk_update(batch, ["value"])
    return batch[-1].id


@workflow.defn(name="bench-one-activity-per-batch")
class OneActivityPerBatch:
    @workflow.run
    async def run(self, data: LoopInput) -> int:
        last_id, batches = 0, 0
        while True:
            next_id = await workflow.execute_activity(
                process_one_batch,
                BatchInput(last_id=last_id, batch_size=data.batch_size, max_id=data.max_id),
                start_to_close_timeout=timedelta(minutes=5),
            )
            if next_id is None:
                return batches
            last_id, batches = next_id, batches + 1


def measure(max_id: int, batch_size: int, task_queue: str) -> dict[str, Any]:
    """Run the rows with id <= `max_id` through the workflow; rows/s and history events."""
    return asyncio.run(_measure(max_id, batch_size, task_queue))


async def _measure(max_id: int, batch_size: int, task_queue: str) -> dict[str, Any]:
    from django.db import connections

    from backfills.temporal.client import connect
    from backfills.temporal.worker import workflow_runner

    client = await connect()
    # One thread: the batches run one after another anyway, and its database connection
    # can be closed at the end.
    with ThreadPoolExecutor(max_workers=1) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[OneActivityPerBatch],
            activities=[process_one_batch],
            activity_executor=executor,
            workflow_runner=workflow_runner(),
        ):
            started = time.monotonic()
            handle = await client.start_workflow(
                OneActivityPerBatch.run,
                LoopInput(batch_size=batch_size, max_id=max_id),
                id=f"bench-one-activity-per-batch-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
            )
            batches = await handle.result()
            seconds = time.monotonic() - started
            history = await handle.fetch_history()
        executor.submit(connections.close_all).result()
    return {"batches": batches, "seconds": seconds, "history_events": len(history.events)}
