"""Inputs and outputs of the workflow and activities.

Plain dataclasses with no Django import, so the workflow sandbox can load them. Their shape is
part of saved workflow histories: add fields with defaults, never rename or remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKFLOW_NAME = "BackfillWorkflow"
PROCESS_BATCHES = "backfills.process_batches"
RECORD_STATUS = "backfills.record_status"

# Signals an operator sends (through backfills.services) to a run's workflow.
PAUSE_SIGNAL = "pause"
RESUME_SIGNAL = "resume"
CANCEL_SIGNAL = "cancel"


@dataclass
class RunOptions:
    """Timeouts and retries, frozen when the run starts so deploys do not change a live run."""

    heartbeat_timeout_seconds: float
    activity_timeout_seconds: float
    max_attempts: int
    retry_initial_interval_seconds: float
    retry_maximum_interval_seconds: float
    #: Continue as new once the history has this many events (0: when the server suggests).
    continue_as_new_after_events: int = 0


@dataclass
class BackfillWorkflowInput:
    run_id: int
    backfill_name: str
    options: RunOptions
    #: Activity epochs already used by earlier executions of this run (fencing order).
    epoch: int = 0
    #: Carried across continue-as-new: the run was paused (or asked to pause).
    paused: bool = False
    #: Carried across continue-as-new: the run was asked to cancel.
    cancel_requested: bool = False


@dataclass
class ProcessBatchesInput:
    run_id: int
    #: Increases each time the workflow schedules the activity; with the attempt number it
    #: orders leases (see backfills/checkpoint.py).
    epoch: int
    heartbeat_timeout_seconds: float


@dataclass
class Progress:
    """Heartbeat details: the last committed position of the attempt."""

    cursor: dict[str, Any] | None = None
    rows_processed: int = 0
    batches_processed: int = 0


@dataclass
class ProcessBatchesResult:
    rows_processed: int
    batches_processed: int
    cursor: dict[str, Any] | None = None


@dataclass
class RecordStatusInput:
    """A status change the workflow makes once the activity has stopped."""

    run_id: int
    status: str
    #: Change only from these statuses (else leave the run as it is); empty: from any.
    only_from: list[str] = field(default_factory=list)
    #: For `failed`: what the workflow knows of the last failure, {"class", "message"}.
    error: dict[str, Any] | None = None
    note: str = ""


@dataclass
class WorkflowState:
    """What the workflow's `state` query answers."""

    epoch: int
    pause_requested: bool
    cancel_requested: bool
    activity_running: bool
