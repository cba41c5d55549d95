"""Every state change of a run goes through here: the admin and every command call these."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from backfills.base import ModelBackfill
from backfills.conf import backfills_settings
from backfills.exceptions import InvalidBatchSize, RunConflict
from backfills.iteration import check_queryset, resolve_keyset
from backfills.models import BackfillRun
from backfills.registry import registry
from backfills.temporal.client import with_client
from backfills.temporal.types import WORKFLOW_NAME, BackfillWorkflowInput, RunOptions

logger = logging.getLogger(__name__)


def workflow_id_for(backfill_name: str) -> str:
    # One workflow ID per backfill: with the FAIL conflict policy Temporal itself refuses a
    # second open workflow of the same backfill, whatever the database says.
    return f"{backfills_settings.workflow_id_prefix}{backfill_name}"


def validate_batch_size(batch_size: Any) -> int:
    maximum = backfills_settings.max_batch_size
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not (1 <= batch_size <= maximum)
    ):
        raise InvalidBatchSize(
            f"Batch size must be an integer from 1 to {maximum:,} (BACKFILLS_MAX_BATCH_SIZE); "
            f"got {batch_size!r}."
        )
    return batch_size


def check_definition(backfill_class: type[ModelBackfill], params: Mapping[str, Any]) -> None:
    """Fail now, not in the worker, on cursor fields or a queryset that cannot work."""
    resolve_keyset(backfill_class.model, backfill_class.cursor_fields)
    backfill = backfill_class(params=backfill_class.typed_params(params))
    check_queryset(
        backfill.get_queryset(), backfill_class.model, f"{backfill_class.__name__}.get_queryset()"
    )


def run_options() -> RunOptions:
    return RunOptions(
        heartbeat_timeout_seconds=backfills_settings.heartbeat_timeout.total_seconds(),
        activity_timeout_seconds=backfills_settings.activity_timeout.total_seconds(),
        max_attempts=backfills_settings.max_attempts,
        retry_initial_interval_seconds=backfills_settings.retry_initial_interval.total_seconds(),
        retry_maximum_interval_seconds=backfills_settings.retry_maximum_interval.total_seconds(),
    )


def start(
    name: str,
    *,
    batch_size: int | None = None,
    params: Mapping[str, Any] | None = None,
    created_by: str = "",
) -> BackfillRun:
    """Validate everything, record a `pending` run and start its workflow.

    Raises a `BackfillError` subclass, with nothing written, on an unknown backfill, bad
    parameters or batch size, a backfill that cannot be iterated, another active run of the
    same backfill, or Temporal out of reach.
    """
    backfill_class = registry.get(name)
    size = validate_batch_size(backfill_class.batch_size if batch_size is None else batch_size)
    cleaned_params = backfill_class.clean_params(params or {})
    check_definition(backfill_class, cleaned_params)
    _refuse_if_active(name)

    workflow_id = workflow_id_for(name)
    try:
        with transaction.atomic():
            run = BackfillRun.objects.create(
                backfill_name=name,
                params=cleaned_params,
                batch_size=size,
                workflow_id=workflow_id,
                created_by=created_by,
            )
            workflow_input = BackfillWorkflowInput(
                run_id=run.pk, backfill_name=name, options=run_options()
            )

            async def start_workflow(client: Client) -> str:
                handle = await client.start_workflow(
                    WORKFLOW_NAME,
                    workflow_input,
                    id=workflow_id,
                    task_queue=backfills_settings.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                )
                return handle.result_run_id or ""

            # Inside the transaction: if Temporal refuses or cannot be reached, the row rolls
            # back. The activity retries until the row is visible.
            run.workflow_run_id = with_client(start_workflow)
            run.save(update_fields=["workflow_run_id"])
    except IntegrityError:
        _refuse_if_active(name)
        raise
    except WorkflowAlreadyStartedError:
        raise RunConflict(
            f"Temporal already has an open workflow {workflow_id!r} for backfill {name!r}, "
            f"though no active run is recorded here. Terminate it in the Temporal UI "
            f"({backfills_settings.temporal_ui_url}) or wait for it to end."
        ) from None
    logger.info("Started run #%s of %s (workflow %s)", run.pk, name, workflow_id)
    return run


def _refuse_if_active(name: str) -> None:
    active = BackfillRun.objects.active().of_backfill(name).first()
    if active is not None:
        raise RunConflict(
            f"Backfill {name!r} already has an active run: #{active.pk} ({active.status}). "
            f"Wait for it to finish, or pause/cancel it first."
        )


def task_queue_pollers(task_queue: str | None = None) -> int:
    """How many workers poll the activity task queue right now (0 means no worker)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    queue = task_queue or backfills_settings.task_queue

    async def describe(client: Client) -> int:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return len(response.pollers)

    return with_client(describe)
