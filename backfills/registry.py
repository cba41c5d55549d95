"""The registry of backfill classes, filled by `@register` when apps' `backfills` modules
are imported (see `BackfillsConfig.ready`)."""

from __future__ import annotations

from typing import TypeVar

from backfills.base import ModelBackfill
from backfills.exceptions import ImproperlyDefinedBackfill, UnknownBackfill

BackfillClass = TypeVar("BackfillClass", bound=type[ModelBackfill])


class Registry:
    def __init__(self) -> None:
        self._backfills: dict[str, type[ModelBackfill]] = {}

    def register(self, backfill_class: BackfillClass) -> BackfillClass:
        if not (isinstance(backfill_class, type) and issubclass(backfill_class, ModelBackfill)):
            raise ImproperlyDefinedBackfill(
                f"@register expects a ModelBackfill subclass, got {backfill_class!r}."
            )
        if not hasattr(backfill_class, "model"):
            raise ImproperlyDefinedBackfill(
                f"Backfill {backfill_class.__qualname__} must set `model`."
            )
        name = backfill_class.name
        existing = self._backfills.get(name)
        # A module imported twice re-creates its classes: same path, not a clash.
        if existing is not None and _class_path(existing) != _class_path(backfill_class):
            raise ImproperlyDefinedBackfill(
                f"Two backfills are named {name!r}: {_class_path(existing)} and "
                f"{_class_path(backfill_class)}. Set a distinct `name` on one of them."
            )
        self._backfills[name] = backfill_class
        return backfill_class

    def unregister(self, name: str) -> None:
        self._backfills.pop(name, None)

    def get(self, name: str) -> type[ModelBackfill]:
        try:
            return self._backfills[name]
        except KeyError:
            known = ", ".join(sorted(self._backfills)) or "none are registered"
            raise UnknownBackfill(f"Unknown backfill {name!r}. Known backfills: {known}.") from None

    def all(self) -> list[type[ModelBackfill]]:
        return [self._backfills[name] for name in sorted(self._backfills)]

    def __contains__(self, name: object) -> bool:
        return name in self._backfills


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


registry = Registry()


def register(backfill_class: BackfillClass) -> BackfillClass:
    """Class decorator: make a `ModelBackfill` startable by its `name`."""
    return registry.register(backfill_class)
