"""Inputs and outputs of the workflow and activities.

Plain dataclasses with no Django import, so the workflow sandbox can load them. Their shape is
part of saved workflow histories: add fields with defaults, never rename or remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKFLOW_NAME = "BackfillWorkflow"
PROCESS_BATCHES = "backfills.process_batches"
MARK_FAILED = "backfills.mark_failed"


@dataclass
class RunOptions:
    """Timeouts and retries, frozen when the run starts so deploys do not change a live run."""

    heartbeat_timeout_seconds: float
    activity_timeout_seconds: float
    max_attempts: int
    retry_initial_interval_seconds: float
    retry_maximum_interval_seconds: float


@dataclass
class BackfillWorkflowInput:
    run_id: int
    backfill_name: str
    options: RunOptions
    #: Activity epochs already used by earlier executions of this run (fencing order).
    epoch: int = 0


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
class MarkFailedInput:
    run_id: int
    #: What the workflow knows of the last failure: {"class", "message"}.
    error: dict[str, Any] = field(default_factory=dict)
