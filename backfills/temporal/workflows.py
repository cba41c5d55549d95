"""The workflow of one run: schedule the long activity, stop it between batches when an
operator pauses or cancels, schedule it again on resume, record the outcome.

Deterministic and small. Its history holds a handful of events however many rows the run
visits (progress travels in heartbeats and the run row), and a handful more per pause/resume
cycle; it continues as new when the server suggests it. A run lives across deploys, so a
change to this logic must go behind `workflow.patched(...)`, with a saved history of the
previous version added to tests/histories/ (see tests/test_replay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from backfills.temporal.types import (
        CANCEL_SIGNAL,
        PAUSE_SIGNAL,
        PROCESS_BATCHES,
        RECORD_STATUS,
        RESUME_SIGNAL,
        WORKFLOW_NAME,
        BackfillWorkflowInput,
        ProcessBatchesInput,
        ProcessBatchesResult,
        RecordStatusInput,
        WorkflowState,
    )

#: Error types that retrying cannot fix.
NON_RETRYABLE_ERRORS = [
    "ImproperlyDefinedBackfill",
    "UnknownBackfill",
    "InvalidParameters",
    "LeaseLost",
    "RunNotRunnable",
]

ACTIVE = ["pending", "running", "pausing", "paused", "cancelling"]


@workflow.defn(name=WORKFLOW_NAME)
class BackfillWorkflow:
    def __init__(self) -> None:
        self._pause_requested = False
        self._cancel_requested = False
        self._epoch = 0
        #: Counts signals, so a paused run wakes on every one: a resume and a pause that
        #: arrive together leave it paused, but the pause must still be recorded.
        self._signals = 0
        self._activity: workflow.ActivityHandle[ProcessBatchesResult] | None = None

    @workflow.signal(name=PAUSE_SIGNAL)
    def pause(self) -> None:
        self._pause_requested = True
        self._signals += 1

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self) -> None:
        self._pause_requested = False
        self._signals += 1

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel(self) -> None:
        self._cancel_requested = True
        self._signals += 1

    @workflow.query(name="state")
    def state(self) -> WorkflowState:
        return WorkflowState(
            epoch=self._epoch,
            pause_requested=self._pause_requested,
            cancel_requested=self._cancel_requested,
            activity_running=self._activity is not None and not self._activity.done(),
        )

    @workflow.run
    async def run(self, input: BackfillWorkflowInput) -> ProcessBatchesResult | None:
        self._epoch = input.epoch
        self._pause_requested = self._pause_requested or input.paused
        self._cancel_requested = self._cancel_requested or input.cancel_requested
        label = f"Backfill {input.backfill_name!r}, run #{input.run_id}"
        try:
            while True:
                if self._cancel_requested:
                    await self._record(input, "cancelled", only_from=ACTIVE)
                    workflow.set_current_details(f"{label}: cancelled")
                    return None
                if self._pause_requested:
                    await self._record(input, "paused", only_from=["pausing"])
                    workflow.set_current_details(f"{label}: paused")
                    await self._wait_for_a_signal()
                    continue
                if self._history_is_long(input):
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(
                        BackfillWorkflowInput(
                            run_id=input.run_id,
                            backfill_name=input.backfill_name,
                            options=input.options,
                            epoch=self._epoch,
                            paused=self._pause_requested,
                            cancel_requested=self._cancel_requested,
                        )
                    )
                workflow.set_current_details(f"{label}: running")
                result = await self._process(input, label)
                if result is not None:
                    workflow.set_current_details(
                        f"{label}: succeeded, {result.rows_processed:,} rows"
                    )
                    return result
        except asyncio.CancelledError:
            # Cancelled from Temporal itself (UI, CLI): stop the activity between batches,
            # record it, then end as cancelled.
            if self._activity is not None and not self._activity.done():
                self._activity.cancel()
                with contextlib.suppress(ActivityError):
                    await self._activity
            await self._record(input, "cancelled", only_from=ACTIVE)
            raise

    async def _wait_for_a_signal(self) -> None:
        seen = self._signals
        await workflow.wait_condition(lambda: self._signals != seen)

    def _history_is_long(self, input: BackfillWorkflowInput) -> bool:
        info = workflow.info()
        threshold = input.options.continue_as_new_after_events
        return info.is_continue_as_new_suggested() or (
            threshold > 0 and info.get_current_history_length() >= threshold
        )

    async def _process(
        self, input: BackfillWorkflowInput, label: str
    ) -> ProcessBatchesResult | None:
        """Run one activity until the rows run out (its result) or an operator stops it
        between batches (None). A final failure records it and fails the workflow."""
        options = input.options
        self._epoch += 1
        self._activity = workflow.start_activity(
            PROCESS_BATCHES,
            ProcessBatchesInput(
                run_id=input.run_id,
                epoch=self._epoch,
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
            # The activity stops at its next batch boundary; wait for that, so a pause or
            # cancel is recorded only once the last batch has committed.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        activity = self._activity
        await workflow.wait_condition(
            lambda: activity.done() or self._pause_requested or self._cancel_requested
        )
        if not activity.done():
            activity.cancel()
        try:
            return await activity
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                return None
            cause = err.cause if isinstance(err.cause, FailureError) else err
            error_class = type(cause).__name__
            if isinstance(cause, ApplicationError) and cause.type:
                error_class = cause.type
            await self._record(
                input,
                "failed",
                only_from=ACTIVE,
                error={"class": error_class, "message": cause.message},
            )
            workflow.set_current_details(f"{label}: failed ({error_class})")
            raise ApplicationError(
                f"Backfill run #{input.run_id} failed: {error_class}: {cause.message}",
                type="BackfillFailed",
                non_retryable=True,
            ) from err

    async def _record(
        self,
        input: BackfillWorkflowInput,
        status: str,
        *,
        only_from: list[str],
        error: dict[str, str] | None = None,
    ) -> None:
        # A local activity: one marker event in the history instead of three, and no extra
        # round trip through the task queue for a single-row update.
        await workflow.execute_local_activity(
            RECORD_STATUS,
            RecordStatusInput(run_id=input.run_id, status=status, only_from=only_from, error=error),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )
