"""Set-based batches: each batch is one UPDATE over a keyset range, no rows in Python.

A batch finds the last key of the next `size` rows (an index range read that returns one
row), then runs `UPDATE ... SET <assignments> WHERE <the queryset's filters> AND (cursor) >
(last batch's key) AND (cursor) <= (this batch's last key)`. Both are bounded by the batch
size, whatever the position. On PostgreSQL the two are one statement (the bound is a CTE the
UPDATE reads, on the database it writes), so with the checkpoint a batch sends two
statements, as many as a hand-written loop without one. Elsewhere they are two statements.

The ORM compiles the statements once per run, with `Slot`s where the keys go; every batch
runs them with its own keys. Compiling an UPDATE with expressions costs about as much as
running it over a thousand rows, so compiling it per batch would halve the throughput. An
update the ORM must split into several statements (a filter across a join on a database
that cannot select from the table it updates, or fields of a parent model) is compiled and
run by the ORM each batch instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.db.models.sql import UpdateQuery

from backfills.iteration import (
    Cursor,
    Keyset,
    KeysetRange,
    RowOf,
    Slot,
    encode_value,
    fill_slots,
)

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

#: Compiled statements kept per run, by batch size (an adaptive size changes the LIMIT).
MAX_CACHED_SIZES = 8

#: The CTE names of PostgreSQL's one-statement batch (unlikely to shadow a table it reads).
BOUND_CTE = "backfills_batch_bound"
UPDATED_CTE = "backfills_batch_updated"

#: A compiled statement: its SQL and parameters (some of them `Slot`s), or None when the
#: queryset can match nothing (`none()`).
Compiled = tuple[str, list[Any]] | None


class SetBasedBatches:
    """The statements of a set-based batch, compiled once and run with each batch's keys."""

    def __init__(
        self, keyset: Keyset, queryset: models.QuerySet[Any], assignments: dict[str, Any]
    ) -> None:
        self.keyset = keyset
        self.queryset = queryset
        self.assignments = assignments
        width = len(keyset.fields)
        self._after = [Slot(index) for index in range(width)]
        self._up_to = [Slot(width + index) for index in range(width)]
        self._bounds: dict[tuple[bool, int], Compiled] = {}
        self._updates: dict[bool, Compiled] = {}
        self._one_statement: dict[tuple[bool, int], Compiled] = {}
        self.read_database = queryset.db
        writes = queryset.all()
        writes._for_write = True  # type: ignore[attr-defined]  # as QuerySet.update() does
        self.write_database = writes.db
        self._single_table: dict[bool, bool] = {}

    def next_batch(self, cursor: Cursor | None, size: int) -> tuple[int, tuple[Any, ...] | None]:
        """Update the next `size` rows after `cursor`: (rows updated, the last row's key).
        The key is None when no rows are left."""
        after = None if cursor is None else self.keyset.decode(cursor)
        has_cursor = after is not None
        write = connections[self.write_database]
        if write.vendor == "postgresql" and self._can_compile(has_cursor):
            statement = self._one_statement_sql(has_cursor, size)
            if statement is None:
                return 0, None
            row = self._fetch(write, statement, after, None)
            if row is None:
                return 0, None
            return int(row[-1]), self._keys(row[:-1], write)
        last = self.last_key(after, size)
        if last is None:
            return 0, None
        return self.update(after, last), last

    def last_key(self, after: tuple[Any, ...] | None, size: int) -> tuple[Any, ...] | None:
        """The key of the last row of the next batch; None when no rows are left."""
        statement = self._bound_sql(after is not None, size)
        if statement is None:
            return None
        read = connections[self.read_database]
        row = self._fetch(read, statement, after, None)
        return None if row is None else self._keys(row, read)

    def update(self, after: tuple[Any, ...] | None, last: tuple[Any, ...]) -> int:
        """Apply the assignments to the rows after `after` up to `last`; the rows changed."""
        has_cursor = after is not None
        if not self._can_compile(has_cursor):
            ranged = self.queryset.filter(KeysetRange(self.keyset.attnames, after, last))
            return ranged.update(**self.assignments)
        if has_cursor not in self._updates:
            self._updates[has_cursor] = self._update_sql(has_cursor, self._up_to)
        statement = self._updates[has_cursor]
        if statement is None:
            return 0
        write = connections[self.write_database]
        with write.cursor() as db_cursor:
            db_cursor.execute(
                statement[0], fill_slots(statement[1], self.keyset, write, after, last)
            )
            return int(db_cursor.rowcount)

    def _fetch(
        self,
        connection: BaseDatabaseWrapper,
        statement: tuple[str, list[Any]],
        after: tuple[Any, ...] | None,
        up_to: tuple[Any, ...] | None,
    ) -> tuple[Any, ...] | None:
        sql, params = statement
        with connection.cursor() as db_cursor:
            db_cursor.execute(sql, fill_slots(params, self.keyset, connection, after, up_to))
            row = db_cursor.fetchone()
        return None if row is None else tuple(row)

    def _keys(self, values: tuple[Any, ...], connection: BaseDatabaseWrapper) -> tuple[Any, ...]:
        """Keys read back from a subquery, converted as the ORM converts the columns: they
        come without the types the driver and Django go by (SQLite's datetimes are text)."""
        keys = []
        for value, field in zip(values, self.keyset.fields, strict=True):
            column = field.get_col(field.model._meta.db_table)
            for convert in (
                *connection.ops.get_db_converters(column),
                *field.get_db_converters(connection),
            ):
                value = convert(value, column, connection)
            keys.append(value)
        return tuple(keys)

    def _range(self, has_cursor: bool, up_to: Any) -> models.QuerySet[Any]:
        """The queryset restricted to a keyset range whose ends are Slots (or `up_to`)."""
        after = self._after if has_cursor else None
        if after is None and up_to is None:
            return self.queryset
        return self.queryset.filter(KeysetRange(self.keyset.attnames, after, up_to))

    def _bound_sql(self, has_cursor: bool, size: int) -> Compiled:
        """SELECT the last key of the next `size` rows."""
        key = (has_cursor, size)
        if key not in self._bounds:
            if len(self._bounds) >= MAX_CACHED_SIZES:
                self._bounds.clear()
            names = self.keyset.attnames
            keys = self._range(has_cursor, None).order_by(*names).values_list(*names)[:size]
            compiler = keys.query.get_compiler(connection=connections[self.read_database])
            try:
                inner, params = compiler.as_sql()
            except EmptyResultSet:
                self._bounds[key] = None
            else:
                # The batch's last row, by position in the select list (the keyset's columns).
                descending = ", ".join(f"{position} DESC" for position in range(1, len(names) + 1))
                self._bounds[key] = (
                    f"SELECT * FROM ({inner}) AS batch ORDER BY {descending} LIMIT 1",
                    list(params),
                )
        return self._bounds[key]

    def _update_query(self, has_cursor: bool, up_to: Any) -> UpdateQuery:
        query = cast(UpdateQuery, self._range(has_cursor, up_to).query.chain(UpdateQuery))
        query.add_update_values(self.assignments)
        query.clear_select_clause()  # as QuerySet.update() does
        return query

    def _can_compile(self, has_cursor: bool) -> bool:
        """Whether the UPDATE is one statement of one table, which can be compiled once."""
        if has_cursor not in self._single_table:
            query = self._update_query(has_cursor, self._up_to)
            query.get_initial_alias()
            self._single_table[has_cursor] = (
                not query.get_related_updates() and query.count_active_tables() == 1
            )
        return self._single_table[has_cursor]

    def _update_sql(self, has_cursor: bool, up_to: Any) -> Compiled:
        query = self._update_query(has_cursor, up_to)
        try:
            sql, params = query.get_compiler(connection=connections[self.write_database]).as_sql()
        except EmptyResultSet:
            return None
        return sql, list(params)

    def _one_statement_sql(self, has_cursor: bool, size: int) -> Compiled:
        """PostgreSQL: the bound and the UPDATE as one statement, returning the last key and
        the count of rows updated (no row when no rows are left)."""
        key = (has_cursor, size)
        if key not in self._one_statement:
            if len(self._one_statement) >= MAX_CACHED_SIZES:
                self._one_statement.clear()
            bound = self._bound_sql(has_cursor, size)
            update = self._update_sql(has_cursor, RowOf(f"SELECT * FROM {BOUND_CTE}"))
            if bound is None or update is None:
                self._one_statement[key] = None
            else:
                self._one_statement[key] = (
                    f"WITH {BOUND_CTE} AS ({bound[0]}), "
                    f"{UPDATED_CTE} AS ({update[0]} RETURNING 1) "
                    f"SELECT {BOUND_CTE}.*, (SELECT count(*) FROM {UPDATED_CTE}) "
                    f"FROM {BOUND_CTE}",
                    [*bound[1], *update[1]],
                )
        return self._one_statement[key]


def cursor_from_values(keyset: Keyset, values: tuple[Any, ...]) -> Cursor:
    return {name: encode_value(value) for name, value in zip(keyset.attnames, values, strict=True)}
