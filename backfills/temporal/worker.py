"""The worker process: polls the task queue, runs workflows and the sync activities.

Graceful: on SIGTERM/SIGINT it stops polling, lets every running activity commit its current
batch and report (they stop at the next batch boundary), then exits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from backfills.conf import backfills_settings
from backfills.registry import Registry
from backfills.registry import registry as default_registry
from backfills.temporal.activities import BackfillActivities
from backfills.temporal.client import connect
from backfills.temporal.workflows import BackfillWorkflow

logger = logging.getLogger(__name__)


def workflow_runner() -> SandboxedWorkflowRunner:
    # The workflow imports only dataclasses from this package; let the sandbox reuse the
    # already-imported package (and Django under it) instead of re-importing them.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("backfills", "django")
    )


@dataclass
class WorkerOptions:
    task_queue: str
    concurrency: int
    graceful_shutdown_timeout: timedelta
    heartbeat_throttle_interval: timedelta

    @classmethod
    def from_settings(
        cls, task_queue: str | None = None, concurrency: int | None = None
    ) -> WorkerOptions:
        return cls(
            task_queue=task_queue or backfills_settings.task_queue,
            concurrency=concurrency or backfills_settings.worker_concurrency,
            graceful_shutdown_timeout=backfills_settings.graceful_shutdown_timeout,
            heartbeat_throttle_interval=backfills_settings.heartbeat_throttle_interval,
        )


def build_worker(
    client: object,
    options: WorkerOptions,
    executor: ThreadPoolExecutor,
    registry: Registry = default_registry,
) -> Worker:
    activities = BackfillActivities(registry)
    return Worker(
        client,  # type: ignore[arg-type]
        task_queue=options.task_queue,
        workflows=[BackfillWorkflow],
        activities=activities.all,
        activity_executor=executor,
        max_concurrent_activities=options.concurrency,
        max_heartbeat_throttle_interval=options.heartbeat_throttle_interval,
        default_heartbeat_throttle_interval=options.heartbeat_throttle_interval,
        graceful_shutdown_timeout=options.graceful_shutdown_timeout,
        workflow_runner=workflow_runner(),
    )


#: Allocations (less deallocations) between the collector's youngest passes; Python's is
#: 700. A batch holds a few objects per row (a row, an instance, its state) until it
#: commits, so at 700 the collector walked every batch several times over while it was
#: being built, only to find it all alive. Above what a batch holds, a pass comes after the
#: batch is freed.
YOUNG_COLLECTION_THRESHOLD = 100_000


def tune_garbage_collection() -> None:
    """Keep the garbage collector off the worker's long-lived objects and out of batches.

    Start-up (Django, the app registry, the SDK) leaves about 100,000 objects that live as
    long as the process; frozen (`gc.freeze`, as pre-forking servers use it), the
    collector's full passes no longer walk them every few batches. What is garbage now is
    collected first. Then the youngest generation's threshold is raised above what a batch
    holds (`YOUNG_COLLECTION_THRESHOLD`); the older generations keep Python's.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


class BackfillWorker:
    """What `manage.py run_backfill_worker` runs until a signal stops it."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        client = await connect()
        with ThreadPoolExecutor(
            max_workers=self.options.concurrency, thread_name_prefix="backfill-activity"
        ) as executor:
            worker = build_worker(client, self.options, executor)
            tune_garbage_collection()
            loop = asyncio.get_running_loop()
            stopping = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stopping.set)
            logger.info(
                "Backfill worker polling task queue %r (concurrency %d)",
                self.options.task_queue,
                self.options.concurrency,
            )
            async with worker:
                await stopping.wait()
                logger.info(
                    "Stopping: letting running batches commit (up to %s)",
                    self.options.graceful_shutdown_timeout,
                )
            logger.info("Backfill worker stopped")
