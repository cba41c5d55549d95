"""Set-based backfills (`UpdateBackfill`): each batch is one UPDATE over a keyset range, with
statements compiled once per run; on every database the suite runs on."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.db.models.functions import Length
from django.db.models.sql.compiler import (
    SQLAggregateCompiler,
    SQLCompiler,
    SQLDeleteCompiler,
    SQLInsertCompiler,
    SQLUpdateCompiler,
)
from django.test.utils import CaptureQueriesContext

from backfills import UpdateBackfill, checkpoint
from backfills.checkpoint import BatchCheckpoint, Lease, LeaseLost
from backfills.iteration import resolve_keyset
from backfills.models import BackfillRun, Status
from backfills.runner import BatchRunner
from backfills.setbased import SetBasedBatches
from example.models import Comment, SearchDocument
from tests.testapp.models import Event, Item, UUIDItem

pytestmark = pytest.mark.django_db

AT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
ON_POSTGRESQL = connection.vendor == "postgresql"


def make_run(name: str, batch_size: int, **fields: Any) -> BackfillRun:
    return BackfillRun.objects.create(backfill_name=name, batch_size=batch_size, **fields)


def checkpoints_of_their_own(queries: CaptureQueriesContext) -> int:
    """Checkpoints written by a statement of their own rather than by a batch's statement."""
    quote = connection.ops.quote_name
    own = f"UPDATE {quote('backfills_backfillrun')} SET {quote('cursor')} = "
    return sum(query["sql"].startswith(own) for query in queries.captured_queries)


def run_to_the_end(run: BackfillRun) -> tuple[int, int]:
    final = BatchRunner(run.pk, Lease(1, 1)).run()
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    return final.rows_processed, final.batches_processed


class DoubleValues(UpdateBackfill):
    name = "double-values"
    model = Item
    update = {"value": F("value") * 2 + 1, "visits": F("visits") + 1}


class DoubleOddValues(DoubleValues):
    name = "double-odd-values"

    def get_queryset(self) -> Any:
        return Item.objects.filter(value__gte=0).exclude(value__in=[0, 2, 4])


class StampUUIDItems(UpdateBackfill):
    name = "stamp-uuid-items"
    model = UUIDItem
    update = {"visits": F("visits") + 1}


class StampEvents(UpdateBackfill):
    name = "stamp-events"
    model = Event
    cursor_fields = ("created_at", "id")
    update = {"visits": F("visits") + 1}


class MeasureIndexedComments(UpdateBackfill):
    """A filter across a relation: the ORM runs this UPDATE (it may need several statements)."""

    name = "measure-indexed-comments"
    model = Comment
    update = {"body_length": Length("body")}

    def get_queryset(self) -> Any:
        return Comment.objects.filter(search_document__word_count__gte=1)


OTHER_COMPILERS = (SQLUpdateCompiler, SQLInsertCompiler, SQLDeleteCompiler, SQLAggregateCompiler)


@pytest.fixture
def compilations(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many times the ORM compiled an UPDATE, and a SELECT, of testapp_item."""
    counts = {"update": 0, "select": 0}
    compile_update, compile_select = SQLUpdateCompiler.as_sql, SQLCompiler.as_sql

    def counting_update(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.query.model is Item:
            counts["update"] += 1
        return compile_update(self, *args, **kwargs)

    def counting_select(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.query.model is Item and not isinstance(self, OTHER_COMPILERS):
            counts["select"] += 1
        return compile_select(self, *args, **kwargs)

    monkeypatch.setattr(SQLUpdateCompiler, "as_sql", counting_update)
    monkeypatch.setattr(SQLCompiler, "as_sql", counting_select)
    yield counts


def test_each_row_is_updated_once_without_reading_rows(registered):
    registered(DoubleValues)
    Item.objects.bulk_create(Item(value=i) for i in range(1050))
    run = make_run("double-values", 100)

    with CaptureQueriesContext(connection) as queries:
        assert run_to_the_end(run) == (1050, 11)

    assert set(Item.objects.values_list("visits", flat=True)) == {1}
    values = Item.objects.order_by("id").values_list("value", flat=True)
    assert list(values) == [2 * i + 1 for i in range(1050)]
    quote = connection.ops.quote_name
    reads_values = [
        q["sql"] for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and quote("value") in q["sql"]
    ]  # fmt: skip
    assert reads_values == [], "a set-based batch must not read rows into Python"
    # One UPDATE a batch. On PostgreSQL it is inside the statement that finds the batch's end,
    # so the last such statement, which finds no rows left, is counted too.
    updates = [
        q["sql"] for q in queries.captured_queries if f"UPDATE {quote('testapp_item')}" in q["sql"]
    ]
    assert len(updates) == (12 if connection.vendor == "postgresql" else 11)
    run.refresh_from_db()
    assert run.cursor == {"id": Item.objects.latest("id").pk}


def test_postgresql_writes_the_checkpoint_in_the_batchs_own_statement(registered):
    registered(DoubleValues)
    Item.objects.bulk_create(Item(value=i) for i in range(250))
    run = make_run("double-values", 100)

    with CaptureQueriesContext(connection) as queries:
        assert run_to_the_end(run) == (250, 3)

    assert checkpoints_of_their_own(queries) == (0 if ON_POSTGRESQL else 3)
    run.refresh_from_db()
    assert run.cursor == {"id": Item.objects.latest("id").pk}
    assert (run.rows_processed, run.batches_processed, run.current_batch_size) == (250, 3, 100)


def test_a_uuid_cursor_built_in_sql_is_the_cursor_python_would_store(registered):
    registered(StampUUIDItems)
    UUIDItem.objects.bulk_create(UUIDItem() for _ in range(25))
    run = make_run("stamp-uuid-items", 10)

    with CaptureQueriesContext(connection) as queries:
        assert run_to_the_end(run) == (25, 3)

    assert checkpoints_of_their_own(queries) == (0 if ON_POSTGRESQL else 3)
    assert set(UUIDItem.objects.values_list("visits", flat=True)) == {1}
    run.refresh_from_db()
    assert run.cursor == {"id": str(UUIDItem.objects.order_by("-id").values_list("id")[0][0])}


@pytest.mark.skipif(not ON_POSTGRESQL, reason="the checkpoint joins the batch's statement there")
@pytest.mark.django_db(transaction=True)
def test_a_lost_lease_fails_a_batch_whose_statement_holds_the_checkpoint():
    Item.objects.bulk_create(Item(value=i) for i in range(10))
    run = make_run("double-values", 5)
    checkpoint.claim(run.pk, Lease(1, 1))
    checkpoint.claim(run.pk, Lease(1, 2))  # a newer attempt: the first one is a zombie
    batches = SetBasedBatches(
        resolve_keyset(Item, ("pk",)), Item.objects.all(), DoubleValues.update
    )

    # In autocommit, as a run sends it: the statement itself must commit nothing.
    with pytest.raises(LeaseLost):
        batches.next_batch(None, 5, BatchCheckpoint(run.pk, Lease(1, 1)))

    assert list(Item.objects.order_by("id").values_list("value", flat=True)) == list(range(10))
    run.refresh_from_db()
    assert (run.cursor, run.rows_processed, run.batches_processed) == (None, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_batch_is_one_statement_outside_any_transaction(registered):
    registered(DoubleValues)
    Item.objects.bulk_create(Item(value=i) for i in range(30))
    autocommit: list[bool] = []

    def note_autocommit(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("WITH backfills_batch_bound"):
            autocommit.append(connection.get_autocommit())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(note_autocommit):
        assert run_to_the_end(make_run("double-values", 10)) == (30, 3)

    # Three batches and the statement that finds no rows left: no BEGIN, no COMMIT to wait for.
    assert autocommit == ([True] * 4 if ON_POSTGRESQL else [])
    assert list(Item.objects.order_by("id").values_list("value", flat=True)) == [
        2 * i + 1 for i in range(30)
    ]


def test_statements_are_compiled_once_per_run_not_per_batch(registered, compilations):
    registered(DoubleValues)
    Item.objects.bulk_create(Item(value=i) for i in range(1000))

    assert run_to_the_end(make_run("double-values", 50)) == (1000, 20)

    # The first batch (no cursor yet) and every later one: one shape each; and the count of
    # rows at the start.
    assert compilations == {"update": 2, "select": 2 + 1}


def test_the_querysets_filter_is_kept(registered):
    registered(DoubleOddValues)
    Item.objects.bulk_create(Item(value=i) for i in range(10))

    assert run_to_the_end(make_run("double-odd-values", 3))[0] == 7

    visits = dict(Item.objects.values_list("value", "visits"))
    assert sorted(value for value, count in visits.items() if count == 0) == [0, 2, 4]


def test_a_composite_cursor_with_ties(registered):
    registered(StampEvents)
    Event.objects.bulk_create(
        Event(created_at=AT + datetime.timedelta(minutes=i // 3), kind=f"k{i}", amount=i)
        for i in range(100)
    )
    run = make_run("stamp-events", 7)

    with CaptureQueriesContext(connection) as queries:
        assert run_to_the_end(run) == (100, 15)

    # PostgreSQL's JSON for a datetime is not the cursor's: checkpoints of their own.
    assert checkpoints_of_their_own(queries) == 15

    assert set(Event.objects.values_list("visits", flat=True)) == {1}
    run.refresh_from_db()
    last = Event.objects.order_by("-created_at", "-id").first()
    assert last is not None and run.cursor is not None
    # The cursor holds the last key as it was read, time zone and all.
    keyset = resolve_keyset(Event, StampEvents.cursor_fields)
    assert keyset.decode(run.cursor) == (last.created_at, last.pk)


def test_a_filter_across_a_relation_is_updated_by_the_orm(registered):
    registered(MeasureIndexedComments)
    for i in range(30):
        comment = Comment.objects.create(author="a", body="x" * i, created_at=AT)
        SearchDocument.objects.create(
            comment=comment, author="a", text="", word_count=i % 3, indexed_at=AT
        )

    assert run_to_the_end(make_run("measure-indexed-comments", 4))[0] == 20

    lengths = dict(Comment.objects.values_list("body", "body_length"))
    assert lengths == {"x" * i: (i if i % 3 else None) for i in range(30)}


def test_a_dry_run_changes_nothing(registered):
    registered(DoubleValues)
    Item.objects.bulk_create(Item(value=i) for i in range(50))

    run = make_run("double-values", 20, dry_run=True)

    with CaptureQueriesContext(connection) as queries:
        assert run_to_the_end(run) == (50, 3)

    assert set(Item.objects.values_list("visits", flat=True)) == {0}
    # The batch's statement rolls back; its checkpoint must not.
    assert checkpoints_of_their_own(queries) == 3
    run.refresh_from_db()
    assert run.cursor == {"id": Item.objects.latest("id").pk}


class UpdateNothing(DoubleValues):
    name = "update-nothing"

    def get_queryset(self) -> Any:
        return Item.objects.none()


def test_a_queryset_that_matches_nothing_finishes_at_once(registered):
    registered(UpdateNothing)
    Item.objects.bulk_create(Item(value=i) for i in range(5))

    assert run_to_the_end(make_run("update-nothing", 2)) == (0, 0)

    assert set(Item.objects.values_list("visits", flat=True)) == {0}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's EXPLAIN")
def test_postgresql_batch_is_one_statement_over_index_ranges():
    Item.objects.bulk_create((Item(value=i) for i in range(20_000)), batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE testapp_item")
    batches = SetBasedBatches(
        resolve_keyset(Item, ("pk",)), Item.objects.all(), DoubleValues.update
    )
    middle = Item.objects.order_by("pk").values_list("pk", flat=True)[10_000]
    with CaptureQueriesContext(connection) as queries:
        assert batches.next_batch({"id": middle}, 1000)[0] == 1000
    [statement] = [query["sql"] for query in queries.captured_queries]

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {statement}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Seq Scan" not in plan, plan
    update = plan[plan.index("Update on testapp_item") :]
    # The upper end is the bound's result: `$1` (PostgreSQL 15), `(InitPlan 2).col1` (18).
    assert re.search(r"Index Scan .*\n\s+Index Cond: \(\(id > \d+\) AND \(id <= ", update), plan


@pytest.mark.django_db(transaction=True)
def test_a_set_based_run_with_server_side_binding(registered, server_side_binding):
    registered(DoubleValues)
    Item.objects.bulk_create(Item(value=i) for i in range(25))
    run = make_run("double-values", 10)

    assert run_to_the_end(run) == (25, 3)

    assert list(Item.objects.order_by("id").values_list("value", flat=True)) == [
        2 * i + 1 for i in range(25)
    ]
    run.refresh_from_db()
    assert run.cursor == {"id": Item.objects.latest("id").pk}
