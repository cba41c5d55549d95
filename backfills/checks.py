"""System checks: a registered backfill whose cursor cannot work fails `manage.py check`."""

from __future__ import annotations

from typing import Any

from django.core import checks

from backfills.exceptions import BackfillError
from backfills.iteration import resolve_keyset


@checks.register()
def check_registered_backfills(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from backfills.registry import registry

    messages: list[checks.CheckMessage] = []
    for backfill_class in registry.all():
        try:
            resolve_keyset(backfill_class.model, backfill_class.cursor_fields)
        except BackfillError as exc:
            messages.append(checks.Error(str(exc), obj=backfill_class, id="backfills.E001"))
        if not backfill_class.batch_size >= 1:
            messages.append(
                checks.Error(
                    f"batch_size of {backfill_class.name!r} must be at least 1.",
                    obj=backfill_class,
                    id="backfills.E002",
                )
            )
    return messages
