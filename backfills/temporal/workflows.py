"""The workflow of one run: schedule the long activity, record the outcome.

Deterministic and small. Its history holds a handful of events however many rows the run
visits: progress travels in heartbeats and the run row, not in the history. A change to this
logic must go behind `workflow.patched(...)`: runs live across deploys.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from backfills.temporal.types import (
        MARK_FAILED,
        PROCESS_BATCHES,
        WORKFLOW_NAME,
        BackfillWorkflowInput,
        MarkFailedInput,
        ProcessBatchesInput,
        ProcessBatchesResult,
    )

#: Error types that retrying cannot fix.
NON_RETRYABLE_ERRORS = [
    "ImproperlyDefinedBackfill",
    "UnknownBackfill",
    "InvalidParameters",
    "LeaseLost",
    "RunNotRunnable",
]


@workflow.defn(name=WORKFLOW_NAME)
class BackfillWorkflow:
    @workflow.run
    async def run(self, input: BackfillWorkflowInput) -> ProcessBatchesResult:
        options = input.options
        workflow.set_current_details(f"Backfill {input.backfill_name!r}, run #{input.run_id}")
        epoch = input.epoch + 1
        try:
            return await workflow.execute_activity(
                PROCESS_BATCHES,
                ProcessBatchesInput(
                    run_id=input.run_id,
                    epoch=epoch,
                    heartbeat_timeout_seconds=options.heartbeat_timeout_seconds,
                ),
                result_type=ProcessBatchesResult,
                start_to_close_timeout=timedelta(seconds=options.activity_timeout_seconds),
                heartbeat_timeout=timedelta(seconds=options.heartbeat_timeout_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=options.retry_initial_interval_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=options.retry_maximum_interval_seconds),
                    maximum_attempts=options.max_attempts,
                    non_retryable_error_types=NON_RETRYABLE_ERRORS,
                ),
            )
        except ActivityError as err:
            cause = err.cause if isinstance(err.cause, FailureError) else err
            error_class = (
                cause.type
                if isinstance(cause, ApplicationError) and cause.type
                else type(cause).__name__
            )
            await workflow.execute_activity(
                MARK_FAILED,
                MarkFailedInput(
                    run_id=input.run_id,
                    error={"class": error_class, "message": cause.message},
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            )
            workflow.set_current_details(
                f"Backfill {input.backfill_name!r}, run #{input.run_id}: failed ({error_class})"
            )
            raise ApplicationError(
                f"Backfill run #{input.run_id} failed: {error_class}: {cause.message}",
                type="BackfillFailed",
                non_retryable=True,
            ) from err
