"""Strict keyset iteration: each batch is
`WHERE (cursor fields) > (last cursor) ORDER BY cursor fields LIMIT batch_size`.

An index range scan whose cost does not depend on how far the run has gone; never OFFSET,
never the whole table in memory. Composite cursors compare as a row value on PostgreSQL, whose
planner turns `(a, b) > (x, y)` into an index range. MariaDB/MySQL and SQLite get the expanded
form with a leading `a >= x` (see `KeysetAfter`).
"""

from __future__ import annotations

import datetime
import decimal
import operator
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.base import ModelState
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan
from django.db.models.lookups import GreaterThanOrEqual
from django.db.models.query import ModelIterable
from django.db.models.signals import post_init, pre_init

from backfills.exceptions import ImproperlyDefinedBackfill

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler, _AsSqlType

#: A cursor as stored in the run row and in heartbeat details: {column attname: JSON value}.
Cursor = dict[str, Any]


@dataclass(frozen=True)
class Keyset:
    """The resolved cursor columns of a model, in order."""

    model: type[models.Model]
    fields: tuple[models.Field[Any, Any], ...]

    @property
    def attnames(self) -> tuple[str, ...]:
        return tuple(field.attname for field in self.fields)

    def cursor_of(self, instance: models.Model) -> Cursor:
        """The JSON-ready cursor just past `instance`."""
        return {name: encode_value(getattr(instance, name)) for name in self.attnames}

    def decode(self, cursor: Cursor) -> tuple[Any, ...]:
        """Typed values of a stored cursor, exactly as they were read from the row."""
        missing = [name for name in self.attnames if name not in cursor]
        if missing:
            raise ImproperlyDefinedBackfill(
                f"Stored cursor {cursor!r} lacks {', '.join(missing)}: the backfill's "
                f"cursor_fields changed during the run. Start a new run."
            )
        return tuple(field.to_python(cursor[field.attname]) for field in self.fields)

    def after(self, queryset: models.QuerySet[Any], cursor: Cursor | None) -> models.QuerySet[Any]:
        """`queryset` ordered by the keyset and restricted to rows after `cursor`."""
        ordered = queryset.order_by(*self.attnames)
        if cursor is None:
            return ordered
        values = self.decode(cursor)
        if len(values) == 1:
            return ordered.filter(**{f"{self.attnames[0]}__gt": values[0]})
        return ordered.filter(
            KeysetAfter(Tuple(*(models.F(name) for name in self.attnames)), list(values))
        )

    def batch(self, queryset: models.QuerySet[Any], cursor: Cursor | None, size: int) -> list[Any]:
        query = self.after(queryset, cursor)[:size]
        rows = instances(query)
        if len(query.query.alias_map) <= 1 or query.query.distinct:
            return rows  # one table, no joins: no row can come twice
        # A filter across a to-many relation repeats a row once per related match; ordered by
        # a unique key the repeats sit next to each other, so drop them here.
        key = operator.attrgetter(*self.attnames)
        unique = rows[:1]
        for row in rows[1:]:
            if key(row) != key(unique[-1]):
                unique.append(row)
        return unique


def instances(queryset: models.QuerySet[Any]) -> list[Any]:
    """The queryset's model instances, as `list(queryset)` returns them.

    Django's `Model.__init__` is general-purpose (keyword arguments, deferred fields, signals)
    and costs about 4 µs per row: most of the Python time of a batch of 1,000. For a plain
    queryset of a plain model the rows are read as tuples and each instance is made the way
    `Model.from_db()` would, with the same attributes and state, in a fifth of the time.
    Anything else goes through Django as usual.
    """
    model: type[models.Model] = queryset.model
    if not _plain_queryset(queryset) or not _plain_model(model):
        return list(queryset)
    names = [field.attname for field in model._meta.concrete_fields]
    database = queryset.db
    built = []
    for row in queryset.values_list(*names):
        instance = model.__new__(model)
        state = ModelState()
        state.adding = False
        state.db = database
        instance._state = state
        for name, value in zip(names, row, strict=True):
            # As Model.__init__ does, so that a field's descriptor sees each value.
            setattr(instance, name, value)
        built.append(instance)
    return built


def _plain_queryset(queryset: models.QuerySet[Any]) -> bool:
    query = queryset.query
    return (
        queryset._iterable_class is ModelIterable
        and not getattr(queryset, "_prefetch_related_lookups", ())
        and not getattr(queryset, "_known_related_objects", {})
        and query.select_related is False
        and not query.annotation_select
        and not query.extra_select
        and query.deferred_loading == (frozenset(), True)  # no defer() or only()
    )


def _plain_model(model: type[models.Model]) -> bool:
    """No custom construction, and nothing listening to it (which the fast path would skip)."""
    return (
        model.__init__ is models.Model.__init__
        and model.from_db.__func__ is models.Model.from_db.__func__  # type: ignore[attr-defined]
        and not pre_init.has_listeners(model)
        and not post_init.has_listeners(model)
    )


class KeysetAfter(TupleGreaterThan):
    """`(a, b, c) > (x, y, z)` in the form each database turns into an index range scan.

    PostgreSQL: the row value itself. MariaDB's range optimizer does not use row-value
    comparisons (a full scan and a filesort instead), and Django spells them out on SQLite as
    `a > x OR (a = x AND (b > y OR ...))`, which SQLite reads by walking the index from its
    start: the further the run, the slower each batch. Both get that expansion behind a
    leading `a >= x`, which bounds the scan on the index's first column; MariaDB also turns
    the OR into ranges over the later columns. Same rows, same order, on every database.
    """

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> _AsSqlType:
        if connection.vendor not in ("mysql", "sqlite"):
            return super().as_sql(compiler, connection)
        # Django's expansion (which also sanitizes the values), behind the leading bound.
        expanded, expanded_params = self.get_fallback_sql(compiler, connection)
        column, value = next(iter(self.lhs)), self.rhs[0]
        first, first_params = compiler.compile(GreaterThanOrEqual(column, value))
        return f"{first} AND ({expanded})", (*first_params, *expanded_params)


def encode_value(value: Any) -> Any:
    """A JSON value that the column's `Field.to_python` turns back into `value` exactly."""
    if value is None:
        raise ImproperlyDefinedBackfill(
            "A cursor column holds NULL; cursor columns must be NOT NULL."
        )
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise ImproperlyDefinedBackfill(
        f"Cannot use a {type(value).__name__} column as a cursor; use integers, strings, "
        f"UUIDs, dates, datetimes or decimals."
    )


def resolve_keyset(model: type[models.Model], cursor_fields: Sequence[str]) -> Keyset:
    """Check that `cursor_fields` name NOT NULL columns that are unique together."""
    label = model._meta.label
    if not cursor_fields:
        raise ImproperlyDefinedBackfill(f"cursor_fields for {label} is empty.")
    fields: list[models.Field[Any, Any]] = []
    for name in cursor_fields:
        if name == "pk":
            pk = model._meta.pk
            assert pk is not None
            fields.extend(_columns_of_pk(pk))
            continue
        try:
            field = model._meta.get_field(name)
        except Exception:
            raise ImproperlyDefinedBackfill(
                f"cursor_fields of {label}: {name!r} is not a field of the model."
            ) from None
        if not isinstance(field, models.Field) or not field.concrete or field.many_to_many:
            raise ImproperlyDefinedBackfill(
                f"cursor_fields of {label}: {name!r} is not a column (relations to many and "
                f"reverse relations cannot order a keyset)."
            )
        fields.append(field)
    names = [field.attname for field in fields]
    if len(set(names)) != len(names):
        raise ImproperlyDefinedBackfill(f"cursor_fields of {label} repeat a column: {names}.")
    nullable = [field.name for field in fields if field.null]
    if nullable:
        raise ImproperlyDefinedBackfill(
            f"cursor_fields of {label}: {', '.join(nullable)} may be NULL; keyset columns "
            f"must be NOT NULL."
        )
    if not _unique_together(model, fields):
        raise ImproperlyDefinedBackfill(
            f"cursor_fields of {label}: ({', '.join(names)}) are not unique together. Add the "
            f"primary key as the last cursor field, e.g. {(*cursor_fields, 'pk')!r}, or a "
            f"UniqueConstraint over them."
        )
    return Keyset(model=model, fields=tuple(fields))


def _columns_of_pk(pk: models.Field[Any, Any]) -> list[models.Field[Any, Any]]:
    # Django 5.2 composite primary keys expose their parts as `fields`.
    parts = getattr(pk, "fields", None)
    return list(parts) if parts else [pk]


def _unique_together(model: type[models.Model], fields: Iterable[models.Field[Any, Any]]) -> bool:
    names = {field.name for field in fields}
    if any(field.unique or field.primary_key for field in fields):
        return True
    pk_parts = getattr(model._meta.pk, "fields", None)
    if pk_parts and {part.name for part in pk_parts} <= names:
        return True
    for group in model._meta.unique_together:
        if set(group) <= names:
            return True
    for constraint in model._meta.constraints:
        if (
            isinstance(constraint, models.UniqueConstraint)
            and constraint.condition is None
            and not constraint.expressions
            and set(constraint.fields) <= names
        ):
            return True
    return False


def check_queryset(queryset: models.QuerySet[Any], model: type[models.Model], origin: str) -> None:
    """Refuse a queryset that the keyset could not page through correctly."""
    if not isinstance(queryset, models.QuerySet):
        raise ImproperlyDefinedBackfill(f"{origin} must return a QuerySet, got {queryset!r}.")
    if queryset.model is not model:
        raise ImproperlyDefinedBackfill(
            f"{origin} returns {queryset.model._meta.label} rows but the backfill's model is "
            f"{model._meta.label}."
        )
    if queryset.query.is_sliced:
        raise ImproperlyDefinedBackfill(
            f"{origin} returns a sliced queryset; remove the slice: the keyset pages through "
            f"the rows itself."
        )
    if not queryset.query.standard_ordering:
        raise ImproperlyDefinedBackfill(
            f"{origin} returns a reversed queryset; remove reverse(): rows are visited in "
            f"ascending cursor_fields order."
        )
    if queryset.query.order_by or queryset.query.extra_order_by:
        raise ImproperlyDefinedBackfill(
            f"{origin} returns an ordered queryset (order_by{tuple(queryset.query.order_by)!r}); "
            f"remove the order_by(): rows are visited in cursor_fields order."
        )
    if queryset._iterable_class is not ModelIterable:
        raise ImproperlyDefinedBackfill(
            f"{origin} must return model instances, not values() or values_list()."
        )
    if queryset.query.distinct_fields or queryset.query.combinator:
        raise ImproperlyDefinedBackfill(
            f"{origin} must not use distinct(*fields) or union()/intersection()/difference(); "
            f"a plain distinct() is fine."
        )
    if queryset.query.select_for_update_skip_locked:
        raise ImproperlyDefinedBackfill(
            f"{origin} uses select_for_update(skip_locked=True), which would skip locked rows "
            f"for good; remove it."
        )
