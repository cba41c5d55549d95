"""Legacy comments live in another service's database; everything else in the default one."""

from __future__ import annotations

from typing import Any

LEGACY = "legacy"


def _is_legacy(model: Any) -> bool:
    return model._meta.label == "example.LegacyComment"


class LegacyRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return LEGACY if _is_legacy(model) else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return LEGACY if _is_legacy(model) else None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if db == LEGACY:
            return app_label == "example" and model_name == "legacycomment"
        if app_label == "example" and model_name == "legacycomment":
            return False
        return None
