"""pause_backfill, resume_backfill, cancel_backfill and retry_backfill share this shape."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandParser

from backfills.management.base import BackfillCommand, run_id
from backfills.models import BackfillRun


class ControlCommand(BackfillCommand):
    #: The service function: (run_id, *, by) -> BackfillRun.
    action: Callable[..., BackfillRun]
    verb = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", type=run_id, metavar="RUN_ID")

    def handle(self, *, run_id: int, **options: Any) -> None:
        run = type(self).action(run_id, by=f"{getpass.getuser()} (manage.py)")
        self.stdout.write(f"Run {run.pk} ({run.backfill_name}) {self.verb}: now {run.status}.")
