"""Workflow determinism across deploys: saved histories of every released version of the
workflow must replay through today's code (temporalio.worker.Replayer).

A change to workflow logic goes behind `workflow.patched(...)`; then record histories of the
new version beside the old ones:

    RECORD_HISTORIES=v2 make test PYTEST_ARGS="tests/test_replay.py -k record"
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from backfills import services
from backfills.models import BackfillRun, Status
from backfills.temporal.client import with_client
from backfills.temporal.worker import workflow_runner
from backfills.temporal.workflows import BackfillWorkflow
from tests.temporal_support import wait_until
from tests.testapp.models import Item

HISTORIES = Path(__file__).parent / "histories"


def saved_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_histories_are_saved_for_the_released_workflow():
    names = {path.stem.split("-", 1)[1] for path in saved_histories()}
    assert {"succeeded", "paused-resumed", "cancelled", "failed", "continued"} <= names


@pytest.mark.parametrize("path", saved_histories(), ids=lambda path: path.stem)
def test_saved_history_replays_on_todays_workflow(path: Path):
    history = WorkflowHistory.from_json("replayed", json.loads(path.read_text()))
    replayer = Replayer(workflows=[BackfillWorkflow], workflow_runner=workflow_runner())

    result = asyncio.run(replayer.replay_workflow(history, raise_on_replay_failure=False))

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def finished(run_id: int) -> bool:
    return BackfillRun.objects.get(pk=run_id).is_finished


def save(version: str, scenario: str, run: BackfillRun) -> None:
    async def fetch(client):
        return await client.get_workflow_handle(
            run.workflow_id, run_id=run.workflow_run_id
        ).fetch_history()

    history = with_client(fetch)
    (HISTORIES / f"{version}-{scenario}.json").write_text(
        json.dumps(history.to_json_dict(), indent=1) + "\n"
    )


@pytest.mark.skipif(not os.environ.get("RECORD_HISTORIES"), reason="set RECORD_HISTORIES=vN")
@pytest.mark.django_db(transaction=True)
def test_record_histories(worker, settings):
    """Not a check: writes tests/histories/<version>-<scenario>.json from real runs."""
    version = os.environ["RECORD_HISTORIES"]
    Item.objects.bulk_create(Item(value=i) for i in range(300))

    def run_to_end(**kwargs) -> BackfillRun:
        run = services.start("touch-items", batch_size=50, **kwargs)
        wait_until(lambda: finished(run.pk), what="the run to end")
        return BackfillRun.objects.get(pk=run.pk)

    save(version, "succeeded", run_to_end())

    run = services.start("touch-items", batch_size=10, params={"sleep": "0.05"})
    wait_until(lambda: BackfillRun.objects.get(pk=run.pk).batches_processed > 2)
    services.pause(run.pk)
    wait_until(lambda: BackfillRun.objects.get(pk=run.pk).status == Status.PAUSED)
    services.resume(run.pk)
    wait_until(lambda: finished(run.pk))
    save(version, "paused-resumed", BackfillRun.objects.get(pk=run.pk))

    run = services.start("touch-items", batch_size=10, params={"sleep": "0.05"})
    wait_until(lambda: BackfillRun.objects.get(pk=run.pk).batches_processed > 2)
    services.cancel(run.pk)
    wait_until(lambda: finished(run.pk))
    save(version, "cancelled", BackfillRun.objects.get(pk=run.pk))

    settings.BACKFILLS_MAX_ATTEMPTS = 2
    poison = Item.objects.order_by("id")[100].pk
    save(version, "failed", run_to_end(params={"poison_id": str(poison)}))
    settings.BACKFILLS_MAX_ATTEMPTS = 10

    # The first execution of a run that continued as new while paused.
    settings.BACKFILLS_CONTINUE_AS_NEW_AFTER_EVENTS = 20
    run = services.start("touch-items", batch_size=10, params={"sleep": "0.05"})
    first_execution = run.workflow_run_id
    for _ in range(2):
        wait_until(lambda: BackfillRun.objects.get(pk=run.pk).status == Status.RUNNING)
        services.pause(run.pk)
        wait_until(lambda: BackfillRun.objects.get(pk=run.pk).status == Status.PAUSED)
        services.resume(run.pk)
    wait_until(lambda: finished(run.pk), timeout=120)
    run.workflow_run_id = first_execution
    save(version, "continued", run)
