"""Fast writes for `process_batch`.

A Python-transform backfill reads a batch, changes attributes and writes the batch back. How
it writes decides the throughput: Django's `QuerySet.bulk_update()` builds a
`CASE WHEN pk = ... THEN ...` with a branch per row for each field, which PostgreSQL walks for
every row it updates (work that grows with the square of the batch size), and a loop of
`save()` is a round trip per row.
`bulk_update` here sends the whole batch as one array per column and joins on it::

    UPDATE app_comment SET body_length = v.body_length
    FROM (SELECT unnest(%s::bigint[]) AS pk, unnest(%s::integer[]) AS body_length) AS v
    WHERE app_comment.id = v.pk

one statement, a handful of parameters whatever the batch size, planned once. On other
databases (SQLite, MySQL) it is Django's `bulk_update()`.

`bulk_upsert` is `bulk_create(update_conflicts=True)` that also runs on MySQL/MariaDB, where
conflict targets cannot be named.
"""

from __future__ import annotations

import datetime
import decimal
import operator
import re
import uuid
from collections.abc import Iterable, Sequence
from types import NoneType
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.features import BaseDatabaseFeatures
from django.db.models import Field, JSONField, Model

__all__ = ["bulk_update", "bulk_upsert", "django_bulk_update"]

# Values that psycopg adapts to a PostgreSQL array element of the cast type. Anything else a
# field's `get_db_prep_value` returns (JSON wrappers, ranges, binary wrappers, a custom
# adapter) goes through Django's own bulk_update instead, which knows how to bind it.
_PLAIN_VALUES = (
    type(None),
    bool,
    int,
    float,
    str,
    decimal.Decimal,
    datetime.date,  # and datetime.datetime
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
)

_TYPE_MODIFIER = re.compile(r"\([^)]*\)")

# Django's own scalar fields, and the Python type of values they send to PostgreSQL unchanged
# (with psycopg 3 integers are only re-wrapped, which the array cast makes unnecessary).
# Their `get_db_prep_value` costs a few microseconds per value, which adds up to milliseconds
# per batch; values of exactly these types (or None) skip it. Subclasses are not listed: they
# may convert values in their own way.
_UNCHANGED_TYPES: dict[type[Field[Any, Any]], type] = {
    models.AutoField: int,
    models.BigAutoField: int,
    models.SmallAutoField: int,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.CharField: str,
    models.TextField: str,
    models.BooleanField: bool,
    models.UUIDField: uuid.UUID,
}


def bulk_update(objs: Iterable[Model], fields: Sequence[str], *, using: str | None = None) -> int:
    """Write `fields` of each object in `objs` to its row; return the number of rows updated.

    `objs` are saved instances of one model (they need a primary key); `fields` are names (or
    attnames, e.g. `"author_id"`) of concrete, non-primary-key columns. On PostgreSQL this is
    a single `UPDATE ... FROM (SELECT unnest(...))` statement for the whole batch; elsewhere,
    and for values it cannot send as arrays (Django expressions such as `F("n") + 1`, JSON,
    array and other non-scalar columns, inherited multi-table fields, composite primary
    keys), it is Django's `bulk_update()` with the same result.

    Unlike Django's `bulk_update()` on PostgreSQL, whose `CASE ... END::varchar(n)` cuts a too
    long string to the column's length, a value that does not fit raises DataError.

    It writes the given rows even where the default manager filters them out. Like
    `bulk_update()`, it sends no signals and calls neither `save()` nor `pre_save()` (so
    `auto_now` is not refreshed). An object listed twice is written once, with its last
    occurrence's values. `using` defaults
    to the router's write database for the model.

    Raises ValueError, before touching the database, for an empty `fields`, a name that is not
    a concrete field of the model, the primary key, a many-to-many field, objects of more than
    one model, or an object without a primary key.
    """
    if not fields:
        raise ValueError("bulk_update() needs at least one field name to write.")
    objs = list(objs)
    if not objs:
        return 0
    model = _single_model(objs)
    resolved = _resolve_fields(model, fields)
    unique = _by_primary_key(objs, resolved)
    database = using or router.db_for_write(model, instance=unique[0])
    connection = connections[database]
    if connection.vendor == "postgresql":
        updated = _unnest_update(model, unique, resolved, connection)
        if updated is not None:
            return updated
    return django_bulk_update(model, unique, [field.name for field in resolved], database)


def django_bulk_update(
    model: type[Model], objs: Sequence[Model], fields: Sequence[str], using: str
) -> int:
    """The portable path of `bulk_update`: Django's `QuerySet.bulk_update()` on the model's
    base manager (so rows a custom default manager hides are written too, as on PostgreSQL)."""
    return model._base_manager.using(using).bulk_update(objs, fields)


def bulk_upsert(
    model: type[Model],
    objs: Iterable[Model],
    *,
    unique_fields: Sequence[str],
    update_fields: Sequence[str],
    using: str | None = None,
) -> int:
    """Insert `objs`, updating `update_fields` of the rows that already exist; return how many
    objects were written (inserted or updated).

    `unique_fields` name the unique constraint that decides "already exists". It is required,
    so that the same code runs everywhere, and is dropped on backends that cannot name a
    conflict target (MySQL/MariaDB, whose `ON DUPLICATE KEY UPDATE` reacts to any unique
    key). Idempotent: a good write for backfills whose target is outside the run's database or
    whose retries must not duplicate rows. A batch must not hold two objects with the same
    unique key (PostgreSQL refuses to update one row twice in a statement).
    """
    objs = list(objs)
    if not unique_fields:
        raise ValueError("bulk_upsert() needs unique_fields: the key that decides an update.")
    if not update_fields:
        raise ValueError("bulk_upsert() needs update_fields: the columns to overwrite.")
    if not objs:
        return 0
    mixed = {type(obj) for obj in objs} - {model}
    if mixed:
        names = ", ".join(sorted(cls._meta.label for cls in mixed))
        raise ValueError(f"bulk_upsert() of {model._meta.label} got objects of {names}.")
    database = using or router.db_for_write(model)
    options = upsert_options(connections[database].features, unique_fields, update_fields)
    model._default_manager.using(database).bulk_create(objs, **options)
    return len(objs)


def upsert_options(
    features: BaseDatabaseFeatures, unique_fields: Sequence[str], update_fields: Sequence[str]
) -> dict[str, Any]:
    """The `bulk_create()` arguments of an upsert on a backend with these features."""
    options: dict[str, Any] = {"update_conflicts": True, "update_fields": list(update_fields)}
    if features.supports_update_conflicts_with_target:
        options["unique_fields"] = list(unique_fields)
    return options


def _single_model(objs: Sequence[Model]) -> type[Model]:
    models = {type(obj) for obj in objs}
    if len(models) > 1:
        names = ", ".join(sorted(model._meta.label for model in models))
        raise ValueError(f"bulk_update() writes one model at a time; got objects of {names}.")
    return models.pop()


def _resolve_fields(model: type[Model], names: Sequence[str]) -> list[Field[Any, Any]]:
    label = model._meta.label
    resolved: list[Field[Any, Any]] = []
    for name in names:
        if name == "pk":
            raise ValueError(
                f"bulk_update(): pk is the primary key of {label}, which identifies the rows "
                f"and cannot be updated by them."
            )
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            raise ValueError(f"bulk_update(): {label} has no field {name!r}.") from None
        if not isinstance(field, Field) or not field.concrete or field.many_to_many:
            raise ValueError(
                f"bulk_update(): {label}.{name} is not a column of the table (many-to-many "
                f"and reverse relations cannot be bulk-updated)."
            )
        if field.primary_key:
            raise ValueError(
                f"bulk_update(): {label}.{name} is the primary key, which identifies the rows "
                f"and cannot be updated by them."
            )
        if field not in resolved:
            resolved.append(field)
    return resolved


def _by_primary_key(objs: Sequence[Model], fields: list[Field[Any, Any]]) -> list[Model]:
    meta = objs[0]._meta
    # The primary key's attribute read directly: `obj.pk` is a property that looks up the
    # field on every call (composite keys keep it: their value is a tuple of columns).
    key = (
        operator.attrgetter(meta.pk.attname)
        if meta.pk is not None and not getattr(meta.pk, "fields", None)
        else operator.attrgetter("pk")
    )
    relations = any(field.is_relation for field in fields)
    if not relations:
        keys = list(map(key, objs))
        if None not in keys and len(set(keys)) == len(keys):
            return list(objs)  # the usual batch: every object saved, each once
    unique: dict[Any, Model] = {}
    for obj in objs:
        pk = key(obj)
        if pk is None:
            raise ValueError(f"bulk_update(): {obj!r} has no primary key; save it first.")
        if relations:
            # Refreshes a foreign key's column from a related object saved after assignment,
            # and refuses an unsaved one, as Django's bulk_update() does.
            obj._prepare_related_fields_for_save(  # type: ignore[attr-defined]  # not in stubs
                operation_name="bulk_update", fields=fields
            )
        # The last occurrence wins: as if each object were saved in turn.
        unique[pk] = obj
    return list(unique.values())


def _unnest_update(
    model: type[Model],
    objs: Sequence[Model],
    fields: list[Field[Any, Any]],
    connection: BaseDatabaseWrapper,
) -> int | None:
    """The UPDATE ... FROM unnest statement, or None when a field or value needs Django's."""
    meta = model._meta
    pk = meta.pk
    if pk is None or getattr(pk, "fields", None):  # Django 5.2's composite primary keys
        return None
    local = set(meta.local_concrete_fields)
    if any(field not in local or isinstance(field, JSONField) for field in fields):
        return None
    types = [_array_element_type(field, connection) for field in (pk, *fields)]
    if any(element is None for element in types):
        return None

    columns: list[Any] = []
    for field, element in zip((pk, *fields), types, strict=True):
        values = _db_values(field, list(map(operator.attrgetter(field.attname), objs)), connection)
        if values is None:
            return None
        columns.append(_array_param(element, values))

    cursor, placeholder = _binding_cursor(connection)
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    names = [quote(field.column) for field in (pk, *fields) if field.column]
    # Aliases v0, v1, ... rather than the column names: a column may be called "pk".
    aliases = [quote(f"v{index}") for index in range(len(columns))]
    unnests = ", ".join(
        f"unnest({placeholder}::{element}[]) AS {alias}"
        for element, alias in zip(types, aliases, strict=True)
    )
    assignments = ", ".join(
        f"{name} = v.{alias}" for name, alias in zip(names[1:], aliases[1:], strict=True)
    )
    sql = (
        f"UPDATE {table} SET {assignments} FROM (SELECT {unnests}) AS v "
        f"WHERE {table}.{names[0]} = v.{aliases[0]}"
    )
    with cursor:
        cursor.execute(sql, columns)
        return int(cursor.rowcount)


#: Array element types whose values go as an array literal (see `_array_param`).
_INTEGER_ELEMENTS = frozenset({"bigint", "integer", "smallint"})


def _array_param(element: str | None, values: list[Any]) -> Any:
    """The parameter of one column: its values, or for integers an array literal.

    psycopg dumps a list with a Python call per element (0.2 ms for 1,000 integers); the text
    of an integer array, `{1,2,NULL}`, is a `str()` each, and PostgreSQL parses it as fast.
    """
    if element not in _INTEGER_ELEMENTS:
        return values
    kinds = set(map(type, values))
    if kinds == {int}:
        return "{" + repr(values)[1:-1] + "}"  # "[1, 2]" to "{1, 2}", faster than a join
    if kinds <= {int, NoneType}:
        return "{" + ",".join(["NULL" if value is None else str(value) for value in values]) + "}"
    return values


def _binding_cursor(connection: BaseDatabaseWrapper) -> tuple[Any, str]:
    """A cursor that sends parameters apart from the SQL text, and its array placeholder.

    Django's default psycopg 3 cursor binds on the client: it quotes every element of every
    array into the statement text, about 1.5 ms for two arrays of 1,000 integers, which was
    most of the Python time of a batch. Bound on the server, in binary (`%b`), they cost a
    fifth of that. The cursor is Django's own wrapper (query logging, execute_wrapper hooks,
    error translation). With psycopg 2 it is the usual cursor and `%s`.
    """
    from django.db.backends.postgresql import base as postgresql  # needs a PostgreSQL driver

    binding_cursor = getattr(postgresql, "ServerBindingCursor", None)  # psycopg 3 only
    if binding_cursor is None:
        return connection.cursor(), "%s"
    connection.ensure_connection()
    raw_connection = connection.connection
    if issubclass(raw_connection.cursor_factory, binding_cursor):  # server_side_binding=True
        return connection.cursor(), "%b"
    connection.validate_thread_sharing()  # as Django checks before any cursor it makes
    raw = binding_cursor(raw_connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw), "%b"
    return connection.make_cursor(raw), "%b"


def _db_values(
    field: Field[Any, Any], values: list[Any], connection: BaseDatabaseWrapper
) -> list[Any] | None:
    """`values` as the database takes them, or None if one cannot go in an array."""
    unchanged = _UNCHANGED_TYPES.get(type(_value_field(field)))
    if unchanged is not None and set(map(type, values)) <= {unchanged, NoneType}:
        return values  # the usual column: nothing to prepare, no value to look at twice
    prepared = []
    for value in values:
        if value is None or type(value) is unchanged:
            prepared.append(value)
            continue
        if hasattr(value, "resolve_expression"):
            return None  # an expression such as F("n") + 1: Django compiles it
        value = field.get_db_prep_value(value, connection, prepared=False)
        if not isinstance(value, _PLAIN_VALUES):
            return None
        prepared.append(value)
    return prepared


def _value_field(field: Field[Any, Any]) -> Field[Any, Any]:
    # A plain foreign key prepares its values with its target's get_db_prep_value.
    if type(field) in (models.ForeignKey, models.OneToOneField):
        target: Field[Any, Any] = field.target_field  # type: ignore[attr-defined]
        return target
    return field


def _array_element_type(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> str | None:
    """The type to cast a column's values to, or None when an array of them cannot be used.

    The length or precision modifier is dropped: an explicit cast to varchar(n) would silently
    truncate, whereas assigning to the column checks the length (and rounds decimals) exactly
    as a plain UPDATE does.
    """
    db_type = field.db_type(connection)  # a ForeignKey answers with its target's column type
    if not db_type or "[" in db_type:  # no column, or an array column (unnest would flatten it)
        return None
    base = _TYPE_MODIFIER.sub("", db_type).strip()
    if base.lower() in {"char", "character"}:
        return "bpchar"  # bare char means char(1)
    return base
