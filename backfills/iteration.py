"""Strict keyset iteration: each batch is
`WHERE (cursor fields) > (last cursor) ORDER BY cursor fields LIMIT batch_size`.

An index range scan whose cost does not depend on how far the run has gone; never OFFSET,
never the whole table in memory. Composite cursors compare as a row value on PostgreSQL, whose
planner turns `(a, b) > (x, y)` into an index range. MariaDB/MySQL and SQLite get the expanded
form with a leading `a >= x` (see `KeysetRange`).

A run reads its batches with a `BatchReader`: the ORM compiles the batch's SELECT once, with
placeholders where the cursor goes, and each batch runs it with its own cursor. On
PostgreSQL the runner may have the previous batch's checkpoint run that SELECT in its round
trip (`read_ahead`), just before that batch commits.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import keyword
import operator
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.db.models.base import ModelState
from django.db.models.fields.tuple_lookups import Tuple
from django.db.models.lookups import Lookup
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
        return ordered.filter(KeysetRange(self.attnames, self.decode(cursor), None))

    def batch(self, queryset: models.QuerySet[Any], cursor: Cursor | None, size: int) -> list[Any]:
        """The next `size` rows after `cursor` (one-off; a run keeps a `BatchReader`)."""
        return BatchReader(self, queryset).batch(cursor, size)


class BatchReader:
    """The batches of one queryset, as model instances in keyset order.

    The ORM compiles the batch's SELECT once per shape (the first batch has no cursor; an
    adaptive batch size changes the LIMIT) with `Slot`s for the cursor values; each batch runs
    it with its own, and converts and builds the rows as the ORM would. A queryset that asks
    for more than its model's columns (select_related, annotations, prefetching, deferred
    fields) is read through the ORM each batch instead.
    """

    def __init__(self, keyset: Keyset, queryset: models.QuerySet[Any]) -> None:
        self.keyset = keyset
        self.queryset = queryset
        self.compiled = _plain_queryset(queryset)
        self.names = [field.attname for field in queryset.model._meta.concrete_fields]
        self._after = [Slot(index) for index in range(len(keyset.fields))]
        self._statements: dict[tuple[bool, int], _Compiled | None] = {}
        #: (cursor, size, when read, rows) of the next batch, read by the previous one.
        self._read_ahead: tuple[Cursor, int, float, list[Any]] | None = None

    def batch(self, cursor: Cursor | None, size: int) -> list[Any]:
        if not self.compiled:
            query = self.keyset.after(self.queryset, cursor)[:size]
            read = list(query)
            joined = len(query.query.alias_map) > 1 and not query.query.distinct
            return self._without_repeats(read) if joined else read
        statement = self._statement(cursor is not None, size)
        if statement is None:
            return []  # the queryset matches nothing (e.g. `none()`)
        fetched = self._take_read_ahead(cursor, size)
        if fetched is None:
            sql, params = self._filled(statement, cursor)
            with connections[self.queryset.db].cursor() as db_cursor:
                db_cursor.execute(sql, params)
                fetched = db_cursor.fetchall()
        rows = (
            statement.compiler.results_iter(results=[fetched], tuple_expected=True)
            if statement.converts
            else fetched
        )
        built = build_instances(self.queryset.model, self.queryset.db, self.names, rows)
        return self._without_repeats(built) if statement.joined else built

    def read_ahead(self, cursor: Cursor, size: int, database: str) -> tuple[str, list[Any]] | None:
        """The SELECT of the batch after `cursor`, for the caller to run on `database` at the
        end of the current batch's transaction (after its writes, just before its COMMIT)
        and hand back to `keep_read_ahead`. None where the rows must be read in the next
        batch's own transaction: a queryset read elsewhere, read through the ORM, or locking
        its rows (select_for_update)."""
        if not self.compiled or self.queryset.db != database:
            return None
        if self.queryset.query.select_for_update:
            return None
        statement = self._statement(True, size)
        return None if statement is None else self._filled(statement, cursor)

    def keep_read_ahead(self, cursor: Cursor, size: int, fetched: list[Any]) -> None:
        """Rows `read_ahead` fetched: the next `batch(cursor, size)` uses them if it comes
        within READ_AHEAD_MAX_AGE seconds (a held run reads its rows again)."""
        self._read_ahead = (cursor, size, time.monotonic(), fetched)

    def _take_read_ahead(self, cursor: Cursor | None, size: int) -> list[Any] | None:
        kept, self._read_ahead = self._read_ahead, None
        if kept is None:
            return None
        kept_cursor, kept_size, read_at, fetched = kept
        fresh = time.monotonic() - read_at <= READ_AHEAD_MAX_AGE
        return fetched if fresh and (kept_cursor, kept_size) == (cursor, size) else None

    def _filled(self, statement: _Compiled, cursor: Cursor | None) -> tuple[str, list[Any]]:
        after = None if cursor is None else self.keyset.decode(cursor)
        connection = connections[self.queryset.db]
        return statement.sql, fill_slots(statement.params, self.keyset, connection, after)

    def _statement(self, has_cursor: bool, size: int) -> _Compiled | None:
        key = (has_cursor, size)
        if key not in self._statements:
            if len(self._statements) >= MAX_COMPILED_SHAPES:
                self._statements.clear()
            ordered = self.queryset.order_by(*self.keyset.attnames)
            if has_cursor:
                ordered = ordered.filter(KeysetRange(self.keyset.attnames, self._after, None))
            query = ordered.values_list(*self.names)[:size].query
            compiler = query.get_compiler(using=self.queryset.db)
            try:
                sql, params = compiler.as_sql()
            except EmptyResultSet:
                self._statements[key] = None
            else:
                joined = len(query.alias_map) > 1 and not query.distinct
                columns = [selected[0] for selected in compiler.select[: compiler.col_count]]
                # Values the database driver returns as they are (integers, text...) need
                # no pass through the ORM's converters.
                converts = bool(compiler.get_converters(columns)) or compiler.has_composite_fields(
                    columns
                )
                self._statements[key] = _Compiled(compiler, sql, list(params), joined, converts)
        return self._statements[key]

    def _without_repeats(self, rows: list[Any]) -> list[Any]:
        # A filter across a to-many relation repeats a row once per related match; ordered by
        # a unique key the repeats sit next to each other, so drop them here.
        key = operator.attrgetter(*self.keyset.attnames)
        unique = rows[:1]
        for row in rows[1:]:
            if key(row) != key(unique[-1]):
                unique.append(row)
        return unique


#: Compiled statements kept per reader (one per LIMIT an adaptive batch size has used).
MAX_COMPILED_SHAPES = 8

#: Oldest rows read ahead that a batch still takes, in seconds: older (a throttled run held
#: its next batch) they are read again.
READ_AHEAD_MAX_AGE = 1.0


@dataclass(frozen=True)
class _Compiled:
    compiler: SQLCompiler
    sql: str
    params: list[Any]
    joined: bool
    converts: bool


def build_instances(
    model: type[models.Model], database: str, names: list[str], rows: Iterable[Sequence[Any]]
) -> list[Any]:
    """Instances of `model` from rows of its concrete columns (`names`, converted values).

    Django's `Model.__init__` is general-purpose (keyword arguments, deferred fields, signals)
    and costs about 4 µs per row: most of the Python time of a batch of 1,000. For a plain
    model each instance is made the way `Model.from_db()` would, with the same attributes and
    state, in about a tenth of the time; any other model goes through its `from_db()`.
    """
    if not _plain_model(model):
        return [model.from_db(database, names, row) for row in rows]
    return _instance_builder(model, tuple(names))(database, rows)


InstanceBuilder = Callable[[str, Iterable[Sequence[Any]]], list[Any]]


@functools.lru_cache(maxsize=64)
def _instance_builder(model: type[models.Model], names: tuple[str, ...]) -> InstanceBuilder:
    """A function that builds instances of `model` from rows of `names`, written for these
    columns as `dataclasses` writes an `__init__`: one attribute store per column, so that
    descriptors see each value as `Model.__init__` lets them, without a loop over the names."""
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in names):
        return functools.partial(_build_by_setattr, model, names)
    values = ", ".join(f"value_{index}" for index in range(len(names)))
    stores = "".join(
        f"        instance.{name} = value_{index}\n" for index, name in enumerate(names)
    )
    source = (
        "def build(database, rows):\n"
        "    built = []\n"
        "    append = built.append\n"
        f"    for ({values},) in rows:\n"
        "        state = ModelState()\n"
        "        state.adding = False\n"
        "        state.db = database\n"
        "        instance = new(model)\n"
        "        instance._state = state\n"
        f"{stores}"
        "        append(instance)\n"
        "    return built\n"
    )
    namespace: dict[str, Any] = {"ModelState": ModelState, "new": model.__new__, "model": model}
    exec(compile(source, f"<backfills: build {model._meta.label}>", "exec"), namespace)
    builder: InstanceBuilder = namespace["build"]
    return builder


def _build_by_setattr(
    model: type[models.Model], names: tuple[str, ...], database: str, rows: Iterable[Sequence[Any]]
) -> list[Any]:
    built = []
    for row in rows:
        instance = model.__new__(model)
        state = ModelState()
        state.adding = False
        state.db = database
        instance._state = state
        for name, value in zip(names, row, strict=True):
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


class Slot:
    """A placeholder among a compiled statement's parameters, filled with a key per batch.

    Slots 0..n-1 stand for the lower end's columns, n..2n-1 for the upper end's.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def fill_slots(
    params: Sequence[Any],
    keyset: Keyset,
    connection: BaseDatabaseWrapper,
    after: Sequence[Any] | None,
    up_to: Sequence[Any] | None = None,
) -> list[Any]:
    """A compiled statement's parameters with each Slot replaced by its key, prepared by the
    key's field as a lookup would prepare it."""
    width = len(keyset.fields)
    keys: dict[int, Any] = {}
    for offset, values in ((0, after), (width, up_to)):
        for index, (field, value) in enumerate(zip(keyset.fields, values or (), strict=False)):
            keys[offset + index] = field.get_db_prep_value(value, connection, prepared=False)
    return [keys[param.index] if type(param) is Slot else param for param in params]


@dataclass(frozen=True)
class RowOf:
    """A range end given as SQL that yields the key's row (a subquery)."""

    sql: str


class KeysetRange(Lookup):
    """`after < (cursor columns) <= up_to`, either end optional, in the form each database
    turns into an index range scan. An end is the columns' values, `Slot`s filled in when a
    compiled statement runs, or a `RowOf` subquery.

    PostgreSQL: a row value, `(a, b) > (x, y)`. MariaDB's range optimizer does not use
    row-value comparisons (a full scan and a filesort instead), and Django spells them out on
    SQLite as `a > x OR (a = x AND b > y)`, which SQLite reads by walking the index from its
    start: the further the run, the slower each batch. Both get that expansion behind a
    leading `a >= x`, which bounds the scan on the index's first column; MariaDB also turns
    the OR into ranges over the later columns. Same rows, same order, on every database.
    """

    lookup_name = "keyset_range"  # not registered on any field: built directly

    def __init__(
        self,
        columns: Sequence[str],
        after: Sequence[Any] | None,
        up_to: Sequence[Any] | RowOf | None,
    ) -> None:
        super().__init__(Tuple(*(models.F(name) for name in columns)), (after, up_to))

    def get_prep_lookup(self) -> Any:
        return self.rhs  # prepared in as_sql, by each column's own field

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> _AsSqlType:
        columns = list(self.lhs)
        names = [compiler.compile(column)[0] for column in columns]
        parts: list[str] = []
        params: list[Any] = []
        for comparison, ends in zip((">", "<="), self.rhs, strict=True):
            if ends is None:
                continue
            if isinstance(ends, RowOf):
                left = names[0] if len(names) == 1 else f"({', '.join(names)})"
                parts.append(f"{left} {comparison} ({ends.sql})")
                continue
            values = [
                end
                if type(end) is Slot
                else column.output_field.get_db_prep_value(end, connection, prepared=False)
                for column, end in zip(columns, ends, strict=True)
            ]
            sql, end_params = _compare(names, comparison, values, connection.vendor)
            parts.append(sql)
            params.extend(end_params)
        return " AND ".join(parts), tuple(params)


def _compare(
    columns: list[str], comparison: str, values: list[Any], vendor: str
) -> tuple[str, list[Any]]:
    if len(columns) == 1:
        return f"{columns[0]} {comparison} %s", values
    if vendor not in ("mysql", "sqlite"):
        placeholders = ", ".join(["%s"] * len(values))
        return f"({', '.join(columns)}) {comparison} ({placeholders})", values
    # (a, b, c) > (x, y, z): a >= x AND (a > x OR (a = x AND (b > y OR (b = y AND c > z)))).
    strict = comparison[0]  # ">" or "<"
    sql, params = f"{columns[-1]} {comparison} %s", [values[-1]]
    for column, value in zip(reversed(columns[:-1]), reversed(values[:-1]), strict=True):
        sql = f"{column} {strict} %s OR ({column} = %s AND ({sql}))"
        params = [value, value, *params]
    return f"{columns[0]} {strict}= %s AND ({sql})", [values[0], *params]


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
