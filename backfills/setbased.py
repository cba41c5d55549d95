"""Set-based batches: each batch is one UPDATE over a keyset range, no rows in Python.

A batch finds the last key of the next `size` rows (an index range read that returns one
row), then runs `UPDATE ... SET <assignments> WHERE <the queryset's filters> AND (cursor) >
(last batch's key) AND (cursor) <= (this batch's last key)`. Both are bounded by the batch
size, whatever the position. On PostgreSQL the two are one statement (the bound is a CTE the
UPDATE reads, on the database it writes), and when the run row lives in that database the
batch's checkpoint is one more CTE: a batch is one statement, where a hand-written loop
without a checkpoint sends two. Elsewhere the bound, the UPDATE and the checkpoint are
three statements.

The ORM compiles the statements once per run, with `Slot`s where the keys go; every batch
runs them with its own keys. Compiling an UPDATE with expressions costs about as much as
running it over a thousand rows, so compiling it per batch would halve the throughput. An
update the ORM must split into several statements (a filter across a join on a database
that cannot select from the table it updates, or fields of a parent model) is compiled and
run by the ORM each batch instead.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.db.models.sql import UpdateQuery

from backfills.checkpoint import BatchCheckpoint, run_database
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
COUNTED_CTE = "backfills_batch_counted"
CHECKPOINT_CTE = "backfills_batch_checkpoint"

#: Key columns whose JSON PostgreSQL writes as the cursor stores them (`encode_value`), so
#: a checkpoint folded into the batch's statement can build the cursor in SQL.
JSON_IN_SQL_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
        "SmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
        "CharField",
        "TextField",
        "UUIDField",
    }
)

#: A compiled statement: its SQL and parameters (some of them `Slot`s), or None when the
#: queryset can match nothing (`none()`).
Compiled = tuple[str, list[Any]] | None


class SetBasedBatch(NamedTuple):
    #: Rows the UPDATE changed.
    rows: int
    #: The key of the batch's last row; None when no rows are left.
    last: tuple[Any, ...] | None
    #: Whether the batch's checkpoint was written by its own statement.
    checkpointed: bool = False


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
        self._keys_in_sql: bool | None = None

    def next_batch(
        self, cursor: Cursor | None, size: int, checkpoint: BatchCheckpoint | None = None
    ) -> SetBasedBatch:
        """Update the next `size` rows after `cursor`.

        With a `checkpoint`, on PostgreSQL, and when the run row lives in the database
        written, the checkpoint is a CTE of the batch's own statement: one statement per
        batch instead of two. Otherwise the caller commits the checkpoint itself.
        """
        after = None if cursor is None else self.keyset.decode(cursor)
        has_cursor = after is not None
        write = connections[self.write_database]
        if write.vendor == "postgresql" and self._can_compile(has_cursor):
            if checkpoint is not None and not self._can_fold_checkpoint(write):
                checkpoint = None
            return self._one_statement_batch(write, has_cursor, size, after, checkpoint)
        last = self.last_key(after, size)
        if last is None:
            return SetBasedBatch(0, None)
        return SetBasedBatch(self.update(after, last), last)

    def folds_checkpoint(self) -> bool:
        """Whether every batch given a checkpoint writes it in its own statement: PostgreSQL,
        an UPDATE of one table, the run row in the database written, and keys whose JSON
        PostgreSQL writes as the cursor stores them."""
        write = connections[self.write_database]
        return (
            write.vendor == "postgresql"
            and self._can_compile(has_cursor=False)
            and self._can_compile(has_cursor=True)
            and self._can_fold_checkpoint(write)
        )

    def _one_statement_batch(
        self,
        write: BaseDatabaseWrapper,
        has_cursor: bool,
        size: int,
        after: tuple[Any, ...] | None,
        checkpoint: BatchCheckpoint | None,
    ) -> SetBasedBatch:
        statement = self._one_statement_sql(has_cursor, size)
        if statement is None:
            return SetBasedBatch(0, None)
        ctes, params = statement[0], fill_slots(statement[1], self.keyset, write, after)
        selected = f"{BOUND_CTE}.*, {COUNTED_CTE}.n"
        guard: AbstractContextManager[None] = nullcontext()
        if checkpoint is not None:
            ctes, params = self._with_checkpoint(ctes, params, checkpoint, write)
            # A lost lease fails the statement, so it commits nothing even in autocommit.
            selected += ", " + checkpoint.lease_check(f"(SELECT count(*) FROM {CHECKPOINT_CTE})")
            guard = checkpoint.lease_guard()
        with guard, write.cursor() as db_cursor:
            db_cursor.execute(f"{ctes} SELECT {selected} FROM {BOUND_CTE}, {COUNTED_CTE}", params)
            row = db_cursor.fetchone()
        if row is None:
            return SetBasedBatch(0, None)
        width = len(self.keyset.fields)
        last = self._keys(tuple(row[:width]), write)
        return SetBasedBatch(int(row[width]), last, checkpointed=checkpoint is not None)

    def last_key(self, after: tuple[Any, ...] | None, size: int) -> tuple[Any, ...] | None:
        """The key of the last row of the next batch; None when no rows are left."""
        statement = self._bound_sql(after is not None, size)
        if statement is None:
            return None
        read = connections[self.read_database]
        row = self._fetch(read, statement, after)
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
    ) -> tuple[Any, ...] | None:
        sql, params = statement
        with connection.cursor() as db_cursor:
            db_cursor.execute(sql, fill_slots(params, self.keyset, connection, after))
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
        """PostgreSQL: the bound and the UPDATE as the CTEs of one statement, with the count
        of rows updated; the caller adds what it selects (no row when no rows are left)."""
        key = (has_cursor, size)
        if key not in self._one_statement:
            if len(self._one_statement) >= MAX_CACHED_SIZES:
                self._one_statement.clear()
            bound = self._bound_sql(has_cursor, size)
            update = self._update_sql(has_cursor, RowOf(f"SELECT * FROM {BOUND_CTE}"))
            if bound is None or update is None:
                self._one_statement[key] = None
            else:
                columns = ", ".join(f"k{index}" for index in range(len(self.keyset.fields)))
                self._one_statement[key] = (
                    f"WITH {BOUND_CTE} ({columns}) AS ({bound[0]}), "
                    f"{UPDATED_CTE} AS ({update[0]} RETURNING 1), "
                    f"{COUNTED_CTE} (n) AS (SELECT count(*) FROM {UPDATED_CTE})",
                    [*bound[1], *update[1]],
                )
        return self._one_statement[key]

    def _can_fold_checkpoint(self, write: BaseDatabaseWrapper) -> bool:
        """The run row is in the database written, and PostgreSQL writes each key's JSON as
        the cursor stores it."""
        if write.alias != run_database():
            return False
        if self._keys_in_sql is None:
            self._keys_in_sql = all(_json_in_sql(field, write) for field in self.keyset.fields)
        return self._keys_in_sql

    def _with_checkpoint(
        self,
        ctes: str,
        params: list[Any],
        checkpoint: BatchCheckpoint,
        write: BaseDatabaseWrapper,
    ) -> tuple[str, list[Any]]:
        """The CTEs with the checkpoint as one more: the cursor is the bound's key, the rows
        are the count updated. Its count of run rows updated is one unless the lease is lost."""
        pairs = ", ".join(
            f"%s::text, {BOUND_CTE}.k{index}" for index in range(len(self.keyset.fields))
        )
        update, checkpoint_params = checkpoint.statement(
            write,
            f"jsonb_build_object({pairs})",
            f"{COUNTED_CTE}.n",
            source=f"{BOUND_CTE}, {COUNTED_CTE}",
        )
        return (
            f"{ctes}, {CHECKPOINT_CTE} AS ({update} RETURNING 1)",
            [*params, *self.keyset.attnames, *checkpoint_params],
        )


def _json_in_sql(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> bool:
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    return (
        target.get_internal_type() in JSON_IN_SQL_TYPES
        and not field.get_db_converters(connection)
        and not connection.ops.get_db_converters(field.get_col(field.model._meta.db_table))
    )


def cursor_from_values(keyset: Keyset, values: tuple[Any, ...]) -> Cursor:
    return {name: encode_value(value) for name, value in zip(keyset.attnames, values, strict=True)}
