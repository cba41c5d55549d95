from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from backfills.management.base import BackfillCommand, run_id
from backfills.models import BackfillRun
from backfills.progress import render_bar

RECENT_RUNS = 20


class Command(BackfillCommand):
    help = "Show one run in detail, or the most recent runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", nargs="?", type=run_id, metavar="RUN_ID")

    def handle(self, *, run_id: int | None, **options: Any) -> None:
        if run_id is None:
            runs = list(BackfillRun.objects.all()[:RECENT_RUNS])
            if not runs:
                self.stdout.write("No runs yet. Start one with: manage.py start_backfill NAME")
            for recent in runs:
                total = "?" if recent.rows_total is None else f"{recent.rows_total:,}"
                self.stdout.write(
                    f"{recent.pk:>6}  {recent.backfill_name}  {recent.status}  "
                    f"{recent.rows_processed:,}/{total} rows"
                )
            return
        run = BackfillRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(
                f"No run {run_id}. See the recent runs with: manage.py backfill_status"
            )
        fields = {
            "Run": run.pk,
            "Backfill": run.backfill_name,
            "Status": run.status,
            "Progress": render_bar(run, None),
            "Batches": f"{run.batches_processed:,}",
            "Batch size": run.batch_size,
            "Parameters": json.dumps(run.params),
            "Cursor": json.dumps(run.cursor),
            "Workflow": f"{run.workflow_id} (run {run.workflow_run_id or '?'})",
            "Created": f"{run.created_at:%Y-%m-%d %H:%M:%S %Z} by {run.created_by or '?'}",
            "Started": run.started_at or "–",
            "Finished": run.finished_at or "–",
            "Last heartbeat": run.last_heartbeat_at or "–",
        }
        for label, value in fields.items():
            self.stdout.write(f"{label + ':':<16}{value}")
        if run.error:
            self.stdout.write(f"{'Error:':<16}{run.describe_error()}")
            self.stdout.write(f"{'Failed at:':<16}{json.dumps(run.error.get('cursor'))}")
            if run.error.get("traceback"):
                self.stdout.write(run.error["traceback"])
