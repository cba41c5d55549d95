"""Every state change of a run goes through here: the admin and every command call these."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, router, transaction
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from backfills.base import ModelBackfill
from backfills.conf import backfills_settings
from backfills.exceptions import (
    IllegalTransition,
    InvalidBatchSize,
    OutOfSync,
    RunConflict,
    RunNotFound,
    TemporalUnavailable,
)
from backfills.iteration import check_queryset, resolve_keyset
from backfills.models import ACTIONS, BackfillRun, Status, StatusChange, allowed_actions
from backfills.registry import registry
from backfills.target import require_database
from backfills.temporal.client import with_client
from backfills.temporal.types import (
    CANCEL_SIGNAL,
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    WORKFLOW_NAME,
    BackfillWorkflowInput,
    RunOptions,
)
from backfills.transitions import change_status

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
    """Fail now, not in the worker, on cursor fields, databases or a queryset that cannot
    work."""
    resolve_keyset(backfill_class.model, backfill_class.cursor_fields)
    if backfill_class.source_database:
        require_database(backfill_class.source_database, "source_database")
    target = backfill_class.target_database
    if target and target != router.db_for_write(BackfillRun):
        require_database(target, "target_database")
    backfill = backfill_class(params=backfill_class.typed_params(params))
    check_queryset(
        backfill.get_queryset(), backfill_class.model, f"{backfill_class.__name__}.get_queryset()"
    )


def run_options() -> RunOptions:
    return RunOptions(
        continue_as_new_after_events=backfills_settings.continue_as_new_after_events,
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
    dry_run: bool = False,
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

    try:
        with transaction.atomic():
            run = BackfillRun.objects.create(
                backfill_name=name,
                params=cleaned_params,
                batch_size=size,
                dry_run=dry_run,
                workflow_id=workflow_id_for(name),
                created_by=created_by,
            )
            StatusChange.objects.create(
                run=run, to_status=Status.PENDING, changed_by=created_by, note="started"
            )
            # Inside the transaction: if Temporal refuses or cannot be reached, the row rolls
            # back. The activity retries until the row is visible.
            run.workflow_run_id = _start_workflow(
                run,
                BackfillWorkflowInput(run_id=run.pk, backfill_name=name, options=run_options()),
            )
            run.save(update_fields=["workflow_run_id"])
    except IntegrityError:
        _refuse_if_active(name)
        raise
    logger.info("Started run #%s of %s (workflow %s)", run.pk, name, run.workflow_id)
    return run


#: How long a start waits for the previous run's workflow to close.
PREVIOUS_WORKFLOW_GRACE_SECONDS = 5.0


def _start_workflow(run: BackfillRun, workflow_input: BackfillWorkflowInput) -> str:
    async def start_workflow(client: Client) -> str:
        start = functools.partial(
            client.start_workflow,
            WORKFLOW_NAME,
            workflow_input,
            id=run.workflow_id,
            task_queue=backfills_settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        try:
            handle = await start()
        except WorkflowAlreadyStartedError:
            # No other run is active here, so the open workflow is most likely the previous
            # run's (or, for a retry, this run's failed one), which records its end a moment
            # before it closes: give it that moment.
            previous = client.get_workflow_handle(run.workflow_id)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(previous.result(), PREVIOUS_WORKFLOW_GRACE_SECONDS)
            handle = await start()
        return handle.result_run_id or ""

    try:
        return with_client(start_workflow)
    except WorkflowAlreadyStartedError:
        raise RunConflict(
            f"Temporal already has an open workflow {run.workflow_id!r} for backfill "
            f"{run.backfill_name!r}, though no other active run is recorded here. Terminate "
            f"it in the Temporal UI ({backfills_settings.temporal_ui_url}) or wait for it to end."
        ) from None


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


def _run_or_refuse(run_id: int) -> BackfillRun:
    run = BackfillRun.objects.select_for_update().filter(pk=run_id).first()
    if run is None:
        raise RunNotFound(f"No run {run_id}. See the recent runs with: manage.py backfill_status")
    return run


def _refuse_action(run: BackfillRun, action: str) -> IllegalTransition:
    if run.status == ACTIONS[action][1]:
        detail = f"it is already {run.status}"
    else:
        detail = f"it is {run.status}"
    others = allowed_actions(run.status)
    if others:
        hint = f" It can be: {', '.join(others)}."
    elif run.is_finished:
        hint = " It is finished."
    else:
        hint = " Wait for it to stop."
    return IllegalTransition(f"Cannot {action} run {run.pk} ({run.backfill_name}): {detail}.{hint}")


def _signal(run: BackfillRun, signal_name: str) -> None:
    async def send(client: Client) -> None:
        # By workflow ID alone: the latest execution, wherever continue-as-new has taken it.
        await client.get_workflow_handle(run.workflow_id).signal(signal_name)

    try:
        with_client(send)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise OutOfSync(
                f"Run {run.pk}'s workflow {run.workflow_id!r} is not running in Temporal; "
                f"bring the database in line with: manage.py reconcile_backfills"
            ) from None
        raise TemporalUnavailable(
            f"Temporal refused to signal run {run.pk}'s workflow {run.workflow_id!r}: "
            f"{exc.message}. Nothing was changed; try again."
        ) from exc


def _control(run_id: int, action: str, signal_name: str, by: str) -> BackfillRun:
    sources, target = ACTIONS[action]
    with transaction.atomic():
        run = _run_or_refuse(run_id)
        if run.status not in sources:
            raise _refuse_action(run, action)
        change_status(run, target, by=by, note=action)
        # Inside the transaction: if Temporal refuses or cannot be reached, nothing changes.
        _signal(run, signal_name)
    logger.info("Run %s: %s requested by %s", run.pk, action, by or "?")
    return run


def pause(run_id: int, *, by: str = "") -> BackfillRun:
    """Ask a run to stop after its current batch commits (`pausing`, then `paused`)."""
    return _control(run_id, "pause", PAUSE_SIGNAL, by)


def resume(run_id: int, *, by: str = "") -> BackfillRun:
    """Continue a paused run from its committed cursor."""
    return _control(run_id, "resume", RESUME_SIGNAL, by)


def cancel(run_id: int, *, by: str = "") -> BackfillRun:
    """Stop a run for good after its current batch; the work committed so far stays."""
    return _control(run_id, "cancel", CANCEL_SIGNAL, by)


def retry(run_id: int, *, by: str = "") -> BackfillRun:
    """Run a failed run again from the cursor of its failing batch, in a new workflow."""
    try:
        with transaction.atomic():
            run = _run_or_refuse(run_id)
            if run.status not in ACTIONS["retry"][0]:
                raise _refuse_action(run, "retry")
            _refuse_if_active(run.backfill_name)
            # What `start` checks, again: the code may have changed since the run failed.
            backfill_class = registry.get(run.backfill_name)
            validate_batch_size(run.batch_size)
            check_definition(backfill_class, backfill_class.clean_params(run.params))
            # The old error stays in the status log's note; the run starts clean.
            change_status(
                run,
                Status.PENDING,
                by=by,
                note=f"retry after {run.describe_error()}"[:2000],
                finished_at=None,
                error=None,
            )
            run.workflow_run_id = _start_workflow(
                run,
                # Leases of the new attempts must rank above every earlier attempt's.
                BackfillWorkflowInput(
                    run_id=run.pk,
                    backfill_name=run.backfill_name,
                    options=run_options(),
                    epoch=run.lease_epoch,
                ),
            )
            run.save(update_fields=["workflow_run_id"])
    except IntegrityError:
        _refuse_if_active(run.backfill_name)
        raise
    return run


@dataclass
class Reconciled:
    run: BackfillRun
    before: str
    after: str
    reason: str


def reconcile(*, by: str = "reconcile_backfills") -> list[Reconciled]:
    """Bring active runs whose workflow has ended (or vanished) in line with Temporal."""
    from temporalio.client import WorkflowExecutionStatus

    async def describe_all(client: Client) -> dict[str, WorkflowExecutionStatus | None]:
        statuses: dict[str, WorkflowExecutionStatus | None] = {}
        for workflow_id in workflow_ids:
            try:
                description = await client.get_workflow_handle(workflow_id).describe()
                statuses[workflow_id] = description.status
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                statuses[workflow_id] = None
        return statuses

    workflow_ids = list(BackfillRun.objects.active().values_list("workflow_id", flat=True))
    statuses = with_client(describe_all) if workflow_ids else {}
    changes = []
    for run_id, workflow_id in BackfillRun.objects.active().values_list("pk", "workflow_id"):
        workflow_status = statuses.get(workflow_id, WorkflowExecutionStatus.RUNNING)
        if workflow_status == WorkflowExecutionStatus.RUNNING:
            continue
        with transaction.atomic():
            run = _run_or_refuse(run_id)
            if not run.is_active:
                continue
            before = run.status
            if workflow_status is None:
                reason = f"workflow {workflow_id!r} does not exist in Temporal"
            else:
                reason = f"workflow {workflow_id!r} ended {workflow_status.name}"
            if workflow_status == WorkflowExecutionStatus.CANCELED:
                if run.status != Status.CANCELLING:
                    change_status(run, Status.CANCELLING, by=by, note=reason)
                change_status(run, Status.CANCELLED, by=by, note=reason)
            else:
                if run.status == Status.PAUSED:
                    change_status(run, Status.CANCELLING, by=by, note=reason)
                error = {
                    "class": "OutOfSync",
                    "message": f"{reason} without recording an outcome; retry to continue "
                    f"from the cursor",
                    "traceback": "",
                    "cursor": run.cursor,
                }
                change_status(run, Status.FAILED, by=by, note=reason, error=error)
            changes.append(Reconciled(run, before, run.status, reason))
    return changes
