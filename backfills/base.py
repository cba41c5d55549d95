"""`ModelBackfill`: the class users subclass to describe a backfill."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from django import forms
from django.db import models
from django.utils.text import slugify

from backfills.exceptions import ImproperlyDefinedBackfill, InvalidParameters


def _default_name(class_name: str) -> str:
    # "CopyCommentsToSearch" -> "copy-comments-to-search"
    spaced = "".join(f" {char}" if char.isupper() else char for char in class_name)
    return slugify(spaced.strip())


class ModelBackfill:
    """Visit every row of `get_queryset()` in keyset order, `batch_size` rows at a time.

    Subclasses set `model` and implement `process_batch`. Each batch, the run's cursor and
    counters commit in one transaction on the database that holds the run; writes that go to
    that database are exactly-once, writes elsewhere at-least-once (make them idempotent).
    """

    #: Registry key, used by `start_backfill NAME`; defaults to a slug of the class name.
    name: ClassVar[str] = ""
    #: One line for listings; defaults to the first line of the class docstring.
    description: ClassVar[str] = ""
    model: ClassVar[type[models.Model]]
    batch_size: ClassVar[int] = 100
    #: Keyset columns: together unique and not null. The primary key by default.
    cursor_fields: ClassVar[tuple[str, ...]] = ("pk",)
    #: Database alias `get_queryset()` is read from (None: where the queryset says).
    source_database: ClassVar[str | None] = None
    #: Database alias `process_batch` writes to. None: the run row's database. Another alias
    #: keeps exactly-once there: the checkpoint then commits in that database, with the batch.
    target_database: ClassVar[str | None] = None
    #: Optional `django.forms.Form` subclass declaring the run's parameters.
    Parameters: ClassVar[type[forms.Form] | None] = None

    # Pacing (see backfills/pacing.py).
    #: Adapt the batch size so batches take about this long (None: always `batch_size`).
    target_batch_seconds: ClassVar[float | None] = None
    #: Bounds of the adaptive batch size (the maximum defaults to BACKFILLS_MAX_BATCH_SIZE).
    min_batch_size: ClassVar[int] = 1
    max_batch_size: ClassVar[int | None] = None
    #: Cap on rows per second (None: as fast as the database goes).
    max_rows_per_second: ClassVar[float | None] = None
    #: On PostgreSQL, hold batches while a replica lags or an autovacuum of the table runs long.
    check_database_health: ClassVar[bool] = True
    max_replica_lag_seconds: ClassVar[float] = 30.0
    max_autovacuum_seconds: ClassVar[float] = 300.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = _default_name(cls.__name__)
        if not cls.__dict__.get("description"):
            doc = (cls.__doc__ or "").strip()
            cls.description = doc.splitlines()[0] if doc else ""
        if isinstance(cls.__dict__.get("cursor_fields"), str):
            cls.cursor_fields = (cls.__dict__["cursor_fields"],)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = dict(params or {})

    def get_queryset(self) -> models.QuerySet[Any]:
        """The rows to visit. Filter as you like; do not order or slice."""
        return self.model._default_manager.all()

    def process_batch(self, batch: list[Any]) -> None:
        """Handle one batch: a list of model instances in cursor order."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_batch(batch)")

    def throttle(self) -> float | tuple[float, str] | None:
        """Called before each batch: return seconds to wait (optionally with a reason shown
        on the run), or None to go on. Asked again after each wait."""
        return None

    # Hooks: called after the matching status change commits, with the run. Exceptions are
    # logged and do not affect the run. See also `backfills.signals`.
    def on_start(self, run: Any) -> None:
        """The first attempt took the run."""

    def on_pause(self, run: Any) -> None:
        """The run stopped after its current batch, paused."""

    def on_resume(self, run: Any) -> None:
        """An operator resumed the run."""

    def on_cancel(self, run: Any) -> None:
        """The run stopped for good after its current batch; committed work is kept."""

    def on_complete(self, run: Any) -> None:
        """The last batch committed."""

    def on_error(self, run: Any) -> None:
        """The run failed; `run.error` holds the error and the failing batch's cursor."""

    @classmethod
    def clean_params(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate raw values (strings from the command line, or JSON values) against
        `Parameters`; return JSON-ready values to store on the run. Raises `InvalidParameters`."""
        return cls.json_params(cls.typed_params(raw))

    @classmethod
    def json_params(cls, typed: Mapping[str, Any]) -> dict[str, Any]:
        """Typed parameter values (a form's cleaned_data) as JSON to store on the run."""
        fields = cls.Parameters.base_fields if cls.Parameters else {}
        # prepare_value gives the form's own representation (a model instance's pk, a
        # duration's string), which the same form parses back when the worker loads it.
        return {key: _json_ready(fields[key].prepare_value(value)) for key, value in typed.items()}

    @classmethod
    def typed_params(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate like `clean_params`, returning the form's typed values (what
        `self.params` holds while the backfill runs)."""
        if cls.Parameters is None:
            if raw:
                raise InvalidParameters(
                    f"Backfill {cls.name!r} takes no parameters (got {', '.join(sorted(raw))})."
                )
            return {}
        form_class = cls.Parameters
        known = list(form_class.base_fields)
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise InvalidParameters(
                f"Unknown parameter {', '.join(unknown)} for backfill {cls.name!r}; "
                f"it takes: {', '.join(known) or 'none'}."
            )
        data = {
            key: field.initial
            for key, field in form_class.base_fields.items()
            if field.initial is not None
        }
        data.update(raw)
        errors = _strict_booleans(form_class, data)
        form = form_class(data=data)
        if errors or not form.is_valid():
            for field, messages in form.errors.items():
                errors.setdefault(field, [str(message) for message in messages])
            detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
            raise InvalidParameters(f"Invalid parameters for {cls.name!r}: {detail}", errors)
        return dict(form.cleaned_data)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
_UNKNOWN = {"", "unknown", "null", "none"}


def _strict_booleans(form_class: type[forms.Form], data: dict[str, Any]) -> dict[str, list[str]]:
    """Django's BooleanField reads any unknown string as True; from a command line that
    hides typos, so `--param flag=maybe` is refused instead."""
    errors: dict[str, list[str]] = {}
    for key, field in form_class.base_fields.items():
        value = data.get(key)
        if isinstance(field, forms.BooleanField) and isinstance(value, str):
            lowered = value.strip().lower()
            if isinstance(field, forms.NullBooleanField) and lowered in _UNKNOWN:
                data[key] = None
            elif lowered in _TRUE:
                data[key] = True
            elif lowered in _FALSE:
                data[key] = False
            else:
                errors[key] = [f"{value!r} is not a boolean; use true or false."]
    return errors


def _json_ready(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    # Dates, decimals, UUIDs: their string form parses back through the same form field.
    return str(value)


class UpdateBackfill(ModelBackfill):
    """A set-based backfill: each batch is one `UPDATE` over a keyset range, with Django
    expressions, and no rows brought to Python::

        @register
        class FillBodyLength(UpdateBackfill):
            model = Comment
            batch_size = 5000
            update = {"body_length": Length("body")}

    Same checkpointing, controls and guarantees as any backfill.
    """

    #: Field name -> value or expression, as for `QuerySet.update()`.
    update: ClassVar[dict[str, Any]] = {}

    def get_update(self) -> dict[str, Any]:
        """The assignments of each batch's UPDATE; override to use the run's parameters."""
        if not self.update:
            raise ImproperlyDefinedBackfill(f"{type(self).__name__} must set `update`.")
        return dict(self.update)

    def process_batch(self, batch: list[Any]) -> None:  # pragma: no cover - never called
        raise NotImplementedError("An UpdateBackfill updates each keyset range in SQL.")
