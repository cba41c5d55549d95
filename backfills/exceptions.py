"""Errors the service layer raises; each message says what to fix."""

from __future__ import annotations


class BackfillError(Exception):
    """Base class of every error this app raises on purpose."""


class UnknownBackfill(BackfillError, LookupError):
    pass


class ImproperlyDefinedBackfill(BackfillError):
    """A backfill class whose model, queryset or cursor fields cannot work."""


class InvalidParameters(BackfillError, ValueError):
    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class InvalidBatchSize(BackfillError, ValueError):
    pass


class RunConflict(BackfillError):
    """Another run of the same backfill is still active."""


class TemporalUnavailable(BackfillError):
    pass


class RunNotFound(BackfillError, LookupError):
    pass


class IllegalTransition(BackfillError):
    """The run's status does not allow what was asked (pause a finished run, ...)."""


class OutOfSync(BackfillError):
    """Temporal and the database disagree about a run; `reconcile_backfills` fixes it."""
