from __future__ import annotations

from typing import Any

from backfills import services
from backfills.conf import backfills_settings
from backfills.management.base import BackfillCommand
from backfills.models import BackfillRun


class Command(BackfillCommand):
    help = (
        "Bring the database in line with Temporal: active runs whose workflow has ended or "
        "vanished become failed (or cancelled). Says what it changed."
    )

    def handle(self, **options: Any) -> None:
        stale = BackfillRun.objects.stale(backfills_settings.heartbeat_timeout)
        for run in stale:
            self.stdout.write(
                f"Run {run.pk} ({run.backfill_name}, {run.status}): no heartbeat since "
                f"{run.last_heartbeat_at or 'it was created'}"
            )
        changes = services.reconcile()
        for change in changes:
            self.stdout.write(
                f"Run {change.run.pk} ({change.run.backfill_name}): {change.before} -> "
                f"{change.after}: {change.reason}"
            )
        if not changes:
            self.stdout.write("Every active run's workflow is running; nothing to change.")
