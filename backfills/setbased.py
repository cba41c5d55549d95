"""Set-based batches: each batch is one UPDATE over a keyset range, no rows in Python.

Per batch, two statements: the last key of the next `size` rows (an index range read that
returns one row), then `UPDATE ... SET <assignments> WHERE <the queryset's filters> AND
(cursor) > (last batch's key) AND (cursor) <= (this batch's last key)`. Both are bounded by
the batch size, whatever the position.

The ORM compiles each statement once per run, with placeholders where the keys go; every
batch runs them with its own keys. Compiling an UPDATE with expressions costs about as much
as running it over a thousand rows, so compiling it per batch would halve the throughput.
An update the ORM must split into several statements (a filter across a join on a database
that cannot select from the table it updates, or fields of a parent model) is compiled and
run by the ORM each batch instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.db import connections, models
from django.db.models.sql import UpdateQuery

from backfills.iteration import Cursor, Keyset, KeysetRange, Slot, encode_value

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

#: Compiled bound statements kept per run, by batch size (an adaptive size changes).
MAX_CACHED_SIZES = 8


class SetBasedBatches:
    """The two statements of a set-based batch, compiled once and run with each batch's keys."""

    def __init__(
        self, keyset: Keyset, queryset: models.QuerySet[Any], assignments: dict[str, Any]
    ) -> None:
        self.keyset = keyset
        self.queryset = queryset
        self.assignments = assignments
        width = len(keyset.fields)
        self._after = [Slot(index) for index in range(width)]
        self._up_to = [Slot(width + index) for index in range(width)]
        self._bounds: dict[tuple[bool, int], tuple[str, list[Any]]] = {}
        self._updates: dict[bool, tuple[str, list[Any]] | None] = {}
        self.read_database = queryset.db
        writes = queryset.all()
        writes._for_write = True  # type: ignore[attr-defined]  # as QuerySet.update() does
        self.write_database = writes.db
        # Read back from a subquery, the keys come without the column types the driver and
        # Django use to convert them (SQLite's datetimes are text): convert them as the ORM does.
        read = connections[self.read_database]
        self._converters = [
            [
                *read.ops.get_db_converters(field.get_col(field.model._meta.db_table)),
                *field.get_db_converters(read),
            ]
            for field in keyset.fields
        ]

    def last_key(self, cursor: Cursor | None, size: int) -> tuple[Any, ...] | None:
        """The cursor values of the last row of the next batch; None when no rows are left."""
        after = None if cursor is None else self.keyset.decode(cursor)
        sql, params = self._bound_statement(after is not None, size)
        connection = connections[self.read_database]
        with connection.cursor() as db_cursor:
            db_cursor.execute(sql, self._bind(params, connection, after, None))
            row = db_cursor.fetchone()
        if row is None:
            return None
        return tuple(
            self._convert(value, field, converters, connection)
            for value, field, converters in zip(
                row, self.keyset.fields, self._converters, strict=True
            )
        )

    def update(self, cursor: Cursor | None, last: tuple[Any, ...]) -> int:
        """Apply the assignments to the rows after `cursor` up to `last`; the rows changed."""
        after = None if cursor is None else self.keyset.decode(cursor)
        compiled = self._update_statement(after is not None)
        if compiled is None:
            return within(self.keyset, self.queryset, cursor, last).update(**self.assignments)
        sql, params = compiled
        connection = connections[self.write_database]
        with connection.cursor() as db_cursor:
            db_cursor.execute(sql, self._bind(params, connection, after, last))
            return int(db_cursor.rowcount)

    def _range(self, after: bool, up_to: bool) -> models.QuerySet[Any]:
        """The queryset restricted to a keyset range whose ends are Slots."""
        if not (after or up_to):
            return self.queryset
        return self.queryset.filter(
            KeysetRange(
                self.keyset.attnames,
                self._after if after else None,
                self._up_to if up_to else None,
            )
        )

    def _bound_statement(self, has_cursor: bool, size: int) -> tuple[str, list[Any]]:
        key = (has_cursor, size)
        if key not in self._bounds:
            if len(self._bounds) >= MAX_CACHED_SIZES:
                self._bounds.clear()
            names = self.keyset.attnames
            keys = self._range(has_cursor, False).order_by(*names).values_list(*names)[:size]
            connection = connections[self.read_database]
            inner, params = keys.query.get_compiler(connection=connection).as_sql()
            # The batch's last row, by position in the select list (the keyset's columns).
            descending = ", ".join(f"{position} DESC" for position in range(1, len(names) + 1))
            self._bounds[key] = (
                f"SELECT * FROM ({inner}) AS batch ORDER BY {descending} LIMIT 1",
                list(params),
            )
        return self._bounds[key]

    def _update_statement(self, has_cursor: bool) -> tuple[str, list[Any]] | None:
        """The compiled UPDATE, or None when the ORM must run it (several statements)."""
        if has_cursor not in self._updates:
            query = cast(UpdateQuery, self._range(has_cursor, True).query.chain(UpdateQuery))
            query.add_update_values(self.assignments)
            query.clear_select_clause()
            query.get_initial_alias()
            if query.get_related_updates() or query.count_active_tables() != 1:
                self._updates[has_cursor] = None
            else:
                compiler = query.get_compiler(connection=connections[self.write_database])
                sql, params = compiler.as_sql()
                self._updates[has_cursor] = (sql, list(params))
        return self._updates[has_cursor]

    def _bind(
        self,
        params: list[Any],
        connection: BaseDatabaseWrapper,
        after: tuple[Any, ...] | None,
        up_to: tuple[Any, ...] | None,
    ) -> list[Any]:
        """The parameters with each Slot replaced by its key, prepared as a lookup would."""
        width = len(self.keyset.fields)
        keys: dict[int, Any] = {}
        for offset, values in ((0, after), (width, up_to)):
            if values is not None:
                for index, (field, value) in enumerate(
                    zip(self.keyset.fields, values, strict=True)
                ):
                    keys[offset + index] = field.get_db_prep_value(
                        value, connection, prepared=False
                    )
        return [keys[param.index] if type(param) is Slot else param for param in params]

    @staticmethod
    def _convert(
        value: Any,
        field: models.Field[Any, Any],
        converters: list[Any],
        connection: BaseDatabaseWrapper,
    ) -> Any:
        expression = field.get_col(field.model._meta.db_table)
        for converter in converters:
            value = converter(value, expression, connection)
        return value


def within(
    keyset: Keyset, queryset: models.QuerySet[Any], cursor: Cursor | None, last: tuple[Any, ...]
) -> models.QuerySet[Any]:
    """The queryset's rows after `cursor` up to and including `last`, for the ORM to update."""
    after = None if cursor is None else keyset.decode(cursor)
    return queryset.filter(KeysetRange(keyset.attnames, after, last))


def cursor_from_values(keyset: Keyset, values: tuple[Any, ...]) -> Cursor:
    return {name: encode_value(value) for name, value in zip(keyset.attnames, values, strict=True)}
