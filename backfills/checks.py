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


#: Each numeric option: (property of backfills_settings, Django setting, smallest allowed).
_NUMERIC_SETTINGS = [
    ("max_batch_size", "BACKFILLS_MAX_BATCH_SIZE", 1),
    ("heartbeat_timeout", "BACKFILLS_HEARTBEAT_TIMEOUT", 0.001),
    ("heartbeat_throttle_interval", "BACKFILLS_HEARTBEAT_THROTTLE_INTERVAL", 0.001),
    ("activity_timeout", "BACKFILLS_ACTIVITY_TIMEOUT", 1),
    ("max_attempts", "BACKFILLS_MAX_ATTEMPTS", 1),
    ("retry_initial_interval", "BACKFILLS_RETRY_INITIAL_INTERVAL", 0.001),
    ("retry_maximum_interval", "BACKFILLS_RETRY_MAXIMUM_INTERVAL", 0.001),
    ("worker_concurrency", "BACKFILLS_WORKER_CONCURRENCY", 1),
    ("graceful_shutdown_timeout", "BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT", 0),
    ("continue_as_new_after_events", "BACKFILLS_CONTINUE_AS_NEW_AFTER_EVENTS", 0),
]


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A mistyped option fails `manage.py check`, not a worker hours into a run."""
    from backfills.conf import backfills_settings

    messages: list[checks.CheckMessage] = []
    for name, setting, minimum in _NUMERIC_SETTINGS:
        try:
            value = getattr(backfills_settings, name)
        except (TypeError, ValueError) as exc:
            messages.append(
                checks.Error(f"{setting} must be a number: {exc}.", id="backfills.E003")
            )
            continue
        number = value.total_seconds() if hasattr(value, "total_seconds") else value
        if number < minimum:
            messages.append(
                checks.Error(
                    f"{setting} must be at least {minimum}; it is {number}.", id="backfills.E003"
                )
            )
    return messages
