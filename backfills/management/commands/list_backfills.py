from __future__ import annotations

from typing import Any

from backfills.management.base import BackfillCommand
from backfills.models import BackfillRun
from backfills.registry import registry


class Command(BackfillCommand):
    help = "List the registered backfills and the status of each one's latest run."

    def handle(self, **options: Any) -> None:
        backfills = registry.all()
        if not backfills:
            self.stdout.write("No backfills registered. Define one in <app>/backfills.py.")
            return
        for backfill in backfills:
            run = BackfillRun.objects.of_backfill(backfill.name).first()
            last = f"run {run.pk}: {run.status}" if run else "never run"
            self.stdout.write(
                f"{backfill.name}  model={backfill.model._meta.label}  "
                f"batch_size={backfill.batch_size}  cursor={','.join(backfill.cursor_fields)}  "
                f"[{last}]"
            )
            if backfill.description:
                self.stdout.write(f"    {backfill.description}")
