"""Set-based batches: each batch is one UPDATE over a keyset range, no rows in Python.

Per batch: one index range read of the batch's keys (its row count and last key), then
`UPDATE ... WHERE (cursor) > (last) AND (cursor) <= (this batch's last) AND <the queryset's
filters>`. Both are bounded by the batch size, whatever the position.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models
from django.db.models.fields.tuple_lookups import Tuple, TupleLessThanOrEqual

from backfills.iteration import Cursor, Keyset


def batch_bound(
    keyset: Keyset, queryset: models.QuerySet[Any], cursor: Cursor | None, size: int
) -> tuple[int, tuple[Any, ...] | None]:
    """(rows in the next batch, the last row's cursor values)."""
    keys = keyset.after(queryset, cursor).values_list(*keyset.attnames)[:size]
    connection = connections[keys.db]
    if connection.vendor == "postgresql":
        # One row back instead of `size`: the count and the last key, computed in SQL.
        sql, params = keys.query.sql_with_params()
        names = [
            connection.ops.quote_name(field.column or field.attname) for field in keyset.fields
        ]
        columns = ", ".join(names)
        descending = ", ".join(f"{name} DESC" for name in names)
        with connection.cursor() as db_cursor:
            db_cursor.execute(
                f"SELECT {columns}, count(*) OVER () FROM ({sql}) AS batch "
                f"ORDER BY {descending} LIMIT 1",
                params,
            )
            row = db_cursor.fetchone()
        if row is None:
            return 0, None
        return int(row[-1]), tuple(row[:-1])
    rows = list(keys)
    return len(rows), (tuple(rows[-1]) if rows else None)


def within(
    keyset: Keyset, queryset: models.QuerySet[Any], cursor: Cursor | None, last: tuple[Any, ...]
) -> models.QuerySet[Any]:
    """The queryset's rows after `cursor` up to and including `last`."""
    after = keyset.after(queryset, cursor).order_by()
    if len(last) == 1:
        return after.filter(**{f"{keyset.attnames[0]}__lte": last[0]})
    return after.filter(
        TupleLessThanOrEqual(Tuple(*(models.F(name) for name in keyset.attnames)), list(last))
    )


def cursor_from_values(keyset: Keyset, values: tuple[Any, ...]) -> Cursor:
    from backfills.iteration import encode_value

    return {name: encode_value(value) for name, value in zip(keyset.attnames, values, strict=True)}
