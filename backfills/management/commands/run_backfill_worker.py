from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import CommandParser

from backfills.management.base import BackfillCommand, positive_int
from backfills.temporal.worker import BackfillWorker, WorkerOptions


class Command(BackfillCommand):
    help = "Run a Temporal worker for backfills until SIGTERM or SIGINT (Ctrl-C)."
    default_log_level = logging.INFO

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--task-queue", help="Task queue to poll (BACKFILLS_TASK_QUEUE).")
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            help="Runs executed at once by this worker (BACKFILLS_WORKER_CONCURRENCY).",
        )

    def handle(self, *, task_queue: str | None, concurrency: int | None, **options: Any) -> None:
        worker_options = WorkerOptions.from_settings(task_queue, concurrency)
        BackfillWorker(worker_options).run()
