from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class BackfillsConfig(AppConfig):
    name = "backfills"
    verbose_name = "Backfills"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backfills import checks  # noqa: F401  (registers the system checks)

        # Import `<app>.backfills` in every installed app so their @register calls run.
        autodiscover_modules("backfills")
