from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.core.management.base import CommandError, CommandParser

from backfills import services
from backfills.management.base import BackfillCommand, positive_float
from backfills.models import Status
from backfills.progress import ProgressWatcher


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


class Command(BackfillCommand):
    help = "Start a run of a registered backfill; prints the run id and the workflow id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Registered backfill name (see list_backfills).")
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Rows per batch (default: the backfill's batch_size).",
        )
        parser.add_argument(
            "--param",
            dest="params",
            action="append",
            type=key_value,
            default=[],
            metavar="KEY=VALUE",
            help="A parameter of the backfill; repeat for several.",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Show a progress bar until the run ends; exit non-zero unless it succeeds.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Process every batch in a transaction that is rolled back; report the rows.",
        )
        parser.add_argument(
            "--poll-interval", type=positive_float, default=0.5, help=argparse.SUPPRESS
        )

    def handle(
        self,
        *,
        name: str,
        batch_size: int | None,
        params: list[tuple[str, str]],
        wait: bool,
        dry_run: bool,
        poll_interval: float,
        **options: Any,
    ) -> None:
        keys = [key for key, _ in params]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise CommandError(f"--param {', '.join(repeated)} given more than once.")
        run = services.start(
            name,
            batch_size=batch_size,
            params=dict(params),
            dry_run=dry_run,
            created_by=f"{getpass.getuser()} (manage.py)",
        )
        kind = "dry run" if run.dry_run else "run"
        self.stdout.write(
            f"Started {kind} {run.pk} of {name!r}: workflow {run.workflow_id} "
            f"(run {run.workflow_run_id})"
        )
        if services.task_queue_pollers() == 0:
            self.stderr.write(
                "Warning: no worker is polling the task queue; the run waits until one "
                "starts: python manage.py run_backfill_worker"
            )
        if not wait:
            return
        final = ProgressWatcher(run.pk, self.stdout, interval=poll_interval).wait()
        if final.status != Status.SUCCEEDED:
            detail = f": {final.describe_error()}" if final.error else ""
            raise CommandError(f"Run {run.pk} ended {final.status}{detail}")
        if final.dry_run:
            self.stdout.write(
                f"Dry run {run.pk} succeeded: {final.rows_processed:,} rows would have been "
                f"processed in {final.batches_processed:,} batches; nothing was changed."
            )
            return
        self.stdout.write(
            f"Run {run.pk} succeeded: {final.rows_processed:,} rows in "
            f"{final.batches_processed:,} batches."
        )
