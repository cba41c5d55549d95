"""Keyset iteration on PostgreSQL, SQLite and MariaDB: every row exactly once, in cursor order,
with an index range scan whose cost does not depend on how far the run has gone (each database's
plan checked by a test of its own); and the refusals of cursor fields and querysets that the
keyset could not page through correctly."""

from __future__ import annotations

import datetime
import json
import random
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, models
from django.db.models import F, QuerySet
from django.db.models.signals import post_init
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import CaptureQueriesContext, isolate_apps

from backfills import iteration
from backfills.exceptions import ImproperlyDefinedBackfill
from backfills.iteration import (
    BatchReader,
    Cursor,
    Keyset,
    build_instances,
    check_queryset,
    resolve_keyset,
)
from backfills.models import BackfillRun
from example.models import Comment, SearchDocument
from tests.testapp.models import Event, Item, Tagged, UUIDItem

pytestmark = pytest.mark.django_db

BASE_TIME = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def visit_all(
    keyset: Keyset,
    queryset: QuerySet[Any],
    size: int,
    after_batch: Callable[[int, Cursor], None] | None = None,
) -> tuple[list[Any], list[int]]:
    """Page through `queryset` the way the runner does; returns (visited pks, batch sizes).

    The cursor goes through JSON between batches, as it does when stored in the run row."""
    reader = BatchReader(keyset, queryset)
    cursor: Cursor | None = None
    visited: list[Any] = []
    sizes: list[int] = []
    while True:
        batch = reader.batch(cursor, size)
        if not batch:
            return visited, sizes
        visited.extend(row.pk for row in batch)
        sizes.append(len(batch))
        assert len(sizes) < 10_000, "the cursor does not advance"
        cursor = json.loads(json.dumps(keyset.cursor_of(batch[-1])))
        assert cursor is not None
        if after_batch is not None:
            after_batch(len(sizes), cursor)


def make_items(count: int) -> list[int]:
    Item.objects.bulk_create([Item(value=i) for i in range(count)], batch_size=5000)
    return list(Item.objects.order_by("pk").values_list("pk", flat=True))


def make_events(count: int, per_timestamp: int = 3, shuffle: bool = True) -> None:
    """`per_timestamp` rows share each created_at; shuffled so that id order is not time order."""
    events = [
        Event(
            created_at=BASE_TIME + datetime.timedelta(seconds=i // per_timestamp),
            kind="e",
            amount=Decimal(i),
        )
        for i in range(count)
    ]
    if shuffle:
        random.Random(4).shuffle(events)
    Event.objects.bulk_create(events, batch_size=5000)


def events_in_cursor_order() -> list[int]:
    rows = Event.objects.values_list("created_at", "pk")
    return [pk for _, pk in sorted(rows)]


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="reads PostgreSQL's EXPLAIN (FORMAT JSON) and its row-value SQL; the other "
    "databases have tests of their own plans below",
)
mysql_only = pytest.mark.skipif(
    connection.vendor != "mysql", reason="reads MariaDB's ANALYZE FORMAT=JSON"
)
sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="reads SQLite's EXPLAIN QUERY PLAN"
)


def analyze(table: str) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute(f"ANALYZE TABLE {table}")
            cursor.fetchall()
        else:
            cursor.execute(f"ANALYZE {table}")


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def analyzed_plan(queryset: QuerySet[Any]) -> dict[str, Any]:
    """The root node of `EXPLAIN (ANALYZE, FORMAT JSON)` of `queryset`."""
    document = json.loads(queryset.explain(format="json", analyze=True))
    if isinstance(document, list):
        document = document[0]
    return document["Plan"]


def index_scan_of(plan: dict[str, Any]) -> dict[str, Any]:
    nodes = list(plan_nodes(plan))
    types = [node["Node Type"] for node in nodes]
    assert "Seq Scan" not in types, types
    assert "Sort" not in types, types
    scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert len(scans) == 1, types
    return scans[0]


# Iteration ------------------------------------------------------------------------------------


def test_integer_pk_visits_every_row_once_in_order() -> None:
    ids = make_items(1050)
    keyset = resolve_keyset(Item, ("pk",))

    visited, sizes = visit_all(keyset, Item.objects.all(), 100)

    assert visited == ids
    assert len(set(visited)) == 1050
    assert sizes == [100] * 10 + [50]


def test_exact_multiple_of_batch_size_ends_on_an_empty_batch() -> None:
    ids = make_items(300)

    visited, sizes = visit_all(resolve_keyset(Item, ("pk",)), Item.objects.all(), 100)

    assert visited == ids
    assert sizes == [100, 100, 100]


def test_uuid_pk_visits_every_row_once_in_uuid_order() -> None:
    UUIDItem.objects.bulk_create([UUIDItem() for _ in range(250)])
    ids = list(UUIDItem.objects.order_by("pk").values_list("pk", flat=True))
    if connection.vendor != "mysql":
        # MariaDB's native UUID type orders RFC 4122 UUIDs by their segments swapped (time
        # first), not byte by byte; the keyset follows whatever order the database has.
        assert ids == sorted(ids)

    visited, sizes = visit_all(resolve_keyset(UUIDItem, ("pk",)), UUIDItem.objects.all(), 40)

    assert visited == ids
    assert sorted(visited) == sorted(UUIDItem.objects.values_list("pk", flat=True))
    assert len(set(visited)) == 250
    assert sizes == [40] * 6 + [10]


def test_composite_cursor_with_ties_visits_every_row_once_in_order() -> None:
    make_events(300, per_timestamp=3)
    expected = events_in_cursor_order()
    assert expected != sorted(expected), "ids must not follow time order for this test"
    keyset = resolve_keyset(Event, ("created_at", "id"))
    boundaries: list[Cursor] = []

    # 7 is prime to 3: most batches end inside a group of rows that share created_at.
    visited, sizes = visit_all(
        keyset, Event.objects.all(), 7, lambda _, cursor: boundaries.append(cursor)
    )

    assert visited == expected
    assert len(set(visited)) == 300
    assert sizes == [7] * 42 + [6]
    split = [
        cursor
        for cursor in boundaries
        if Event.objects.filter(created_at=cursor["created_at"], id__gt=cursor["id"]).exists()
    ]
    assert len(split) >= 20, "batches must end inside groups of rows that share created_at"


def test_empty_table_gives_no_batch() -> None:
    keyset = resolve_keyset(Item, ("pk",))

    assert keyset.batch(Item.objects.all(), None, 100) == []
    assert visit_all(keyset, Item.objects.all(), 100) == ([], [])


def test_filtered_queryset_visits_only_matching_rows() -> None:
    make_items(1000)
    expected = list(Item.objects.filter(value__gte=700).order_by("pk").values_list("pk", flat=True))
    assert len(expected) == 300

    visited, sizes = visit_all(
        resolve_keyset(Item, ("pk",)), Item.objects.filter(value__gte=700), 64
    )

    assert visited == expected
    assert sizes == [64] * 4 + [44]


def test_rows_changed_during_iteration() -> None:
    ids = make_items(300)
    # Gaps that rows are re-inserted into later: one behind the cursor, one ahead of it.
    behind_gap, ahead_gap = ids[10:20], ids[200:210]
    Item.objects.filter(pk__in=behind_gap + ahead_gap).delete()
    deleted_ahead = ids[120:150]
    inserted_ahead: list[int] = []

    def change(batches: int, cursor: Cursor) -> None:
        if batches != 2:
            return
        assert cursor["id"] == [pk for pk in ids if pk not in behind_gap][99]
        Item.objects.filter(pk__in=deleted_ahead).delete()
        Item.objects.bulk_create([Item(pk=pk, value=-1) for pk in behind_gap + ahead_gap])
        fresh = Item.objects.bulk_create([Item(value=-2) for _ in range(25)])
        inserted_ahead.extend(item.pk for item in fresh)

    visited, _ = visit_all(resolve_keyset(Item, ("pk",)), Item.objects.all(), 50, change)

    assert len(inserted_ahead) == 25
    assert min(inserted_ahead) > max(ids)
    skipped = set(behind_gap + ahead_gap + deleted_ahead)
    expected = sorted([pk for pk in ids if pk not in skipped] + ahead_gap + inserted_ahead)
    assert visited == expected
    assert len(set(visited)) == len(visited)
    assert not set(visited) & set(deleted_ahead)
    assert not set(visited) & set(behind_gap)


# Query plans ----------------------------------------------------------------------------------


@postgresql_only
def test_batch_query_is_an_index_range_scan_with_limit_and_no_offset() -> None:
    ids = make_items(20_000)
    analyze("testapp_item")
    keyset = resolve_keyset(Item, ("pk",))

    with CaptureQueriesContext(connection) as queries:
        batch = keyset.batch(Item.objects.all(), {"id": ids[5000]}, 100)
    assert [item.pk for item in batch] == ids[5001:5101]
    [sql] = [query["sql"] for query in queries.captured_queries]
    assert "OFFSET" not in sql.upper()
    assert sql.endswith("LIMIT 100")
    assert f'WHERE "testapp_item"."id" > {ids[5000]}' in sql
    # Ordered by the id column (by its position in the select list when it is selected).
    assert re.search(r'ORDER BY (1|"testapp_item"\."id") ASC LIMIT', sql), sql
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using testapp_item_pkey" in plan or "Index Only Scan" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "Sort" not in plan, plan


@postgresql_only
def test_batch_cost_does_not_grow_with_position() -> None:
    ids = make_items(20_000)
    analyze("testapp_item")
    keyset = resolve_keyset(Item, ("pk",))

    scans = []
    for position in (0, 100, 19_500):
        queryset = keyset.after(Item.objects.all(), {"id": ids[position]})[:100]
        assert "OFFSET" not in str(queryset.query).upper()
        plan = analyzed_plan(queryset)
        assert plan["Node Type"] == "Limit"
        assert plan["Actual Rows"] == 100
        scans.append(index_scan_of(plan))

    for scan in scans:
        assert scan["Index Name"] == "testapp_item_pkey"
        assert "id >" in scan["Index Cond"]
        assert "Filter" not in scan
        # The scan reads the batch only, whether near the start or near the end.
        assert scan["Actual Rows"] == 100


@postgresql_only
def test_composite_batch_uses_row_value_comparison_and_the_composite_index() -> None:
    make_events(20_000, per_timestamp=3, shuffle=False)
    analyze("testapp_event")
    keyset = resolve_keyset(Event, ("created_at", "id"))
    rows = list(Event.objects.order_by("created_at", "id"))

    for row in (rows[100], rows[15_000]):
        queryset = keyset.after(Event.objects.all(), keyset.cursor_of(row))[:100]
        sql = str(queryset.query)
        assert '("testapp_event"."created_at", "testapp_event"."id") > (' in sql
        assert "OFFSET" not in sql.upper()
        assert sql.endswith("LIMIT 100")
        assert "event_created_id" in queryset.explain()
        plan = analyzed_plan(queryset)
        scan = index_scan_of(plan)
        assert scan["Index Name"] == "event_created_id"
        assert "Filter" not in scan
        assert scan["Actual Rows"] == 100
        position = rows.index(row)
        assert [e.pk for e in queryset] == [e.pk for e in rows[position + 1 : position + 101]]


def mariadb_table_access(queryset: QuerySet[Any]) -> dict[str, Any]:
    """The one table access of MariaDB's `ANALYZE FORMAT=JSON` of `queryset` (run for real)."""
    if not getattr(connection, "mysql_is_mariadb", False):
        pytest.skip("reads MariaDB's ANALYZE FORMAT=JSON (MySQL has no such statement)")
    document = json.loads(queryset.explain(format="json", analyze=True))
    if isinstance(document, str):  # Django hands MariaDB's JSON over quoted as a JSON string
        document = json.loads(document)
    block = document["query_block"]
    # A sort of the rows would show as "filesort" (or a temporary table) around the access.
    assert "filesort" not in json.dumps(block) and "temporary" not in json.dumps(block), block
    (step,) = block["nested_loop"]
    return step["table"]


# ANALYZE TABLE commits on MariaDB, which would leave the rows behind for the next tests.
@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mariadb_batch_query_is_an_index_range_scan_that_reads_only_the_batch() -> None:
    ids = make_items(20_000)
    analyze("testapp_item")
    keyset = resolve_keyset(Item, ("pk",))

    for position in (0, 100, 19_500):
        queryset = keyset.after(Item.objects.all(), {"id": ids[position]})[:100]
        sql = str(queryset.query)
        assert "OFFSET" not in sql.upper()
        assert sql.endswith("LIMIT 100")
        assert f"WHERE `testapp_item`.`id` > {ids[position]}" in sql
        access = mariadb_table_access(queryset)
        assert access["access_type"] == "range", access
        assert access["key"] == "PRIMARY", access
        # The scan reads the batch only, whether near the start or near the end.
        assert access["r_rows"] == 100, access
        assert [item.pk for item in queryset] == ids[position + 1 : position + 101]


# ANALYZE TABLE commits on MariaDB, which would leave the rows behind for the next tests.
@mysql_only
@pytest.mark.django_db(transaction=True)
def test_mariadb_composite_batch_is_an_expanded_range_scan_of_the_composite_index() -> None:
    # MariaDB's range optimizer ignores `(created_at, id) > (x, y)` (a full scan and a
    # filesort); the keyset spells it `created_at >= x AND (created_at > x OR (... id > y))`.
    make_events(20_000, per_timestamp=3, shuffle=False)
    analyze("testapp_event")
    keyset = resolve_keyset(Event, ("created_at", "id"))
    rows = list(Event.objects.order_by("created_at", "id"))

    for position in (100, 15_000):
        queryset = keyset.after(Event.objects.all(), keyset.cursor_of(rows[position]))[:100]
        sql = str(queryset.query)
        assert "(`testapp_event`.`created_at`, `testapp_event`.`id`) >" not in sql
        assert "WHERE `testapp_event`.`created_at` >= " in sql
        assert " OR (`testapp_event`.`created_at` = " in sql
        assert "OFFSET" not in sql.upper()
        assert sql.endswith("LIMIT 100")
        access = mariadb_table_access(queryset)
        assert access["access_type"] == "range", access
        assert access["key"] == "event_created_id", access
        assert access["used_key_parts"] == ["created_at", "id"], access
        assert access["r_rows"] == 100, access
        assert [e.pk for e in queryset] == [e.pk for e in rows[position + 1 : position + 101]]


@sqlite_only
def test_sqlite_batch_queries_search_the_index_without_sorting() -> None:
    ids = make_items(2000)
    make_events(2000, per_timestamp=3, shuffle=False)
    analyze("testapp_item")
    analyze("testapp_event")
    events = list(Event.objects.order_by("created_at", "id"))
    single = resolve_keyset(Item, ("pk",)).after(Item.objects.all(), {"id": ids[1500]})[:100]
    composite_keyset = resolve_keyset(Event, ("created_at", "id"))
    composite = composite_keyset.after(
        Event.objects.all(), composite_keyset.cursor_of(events[1500])
    )[:100]

    single_plan = single.explain()
    composite_plan = composite.explain()

    # SEARCH is a range of the index; a SCAN would walk it from the start (the cost growing
    # with the run's position) and a TEMP B-TREE would sort.
    assert "SEARCH testapp_item USING INTEGER PRIMARY KEY (rowid>?)" in single_plan, single_plan
    assert "USING INDEX event_created_id (created_at>?)" in composite_plan, composite_plan
    for plan in (single_plan, composite_plan):
        assert "SEARCH" in plan and "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
    sql = str(composite.query)
    assert 'WHERE "testapp_event"."created_at" >= ' in sql
    assert "OFFSET" not in sql.upper() and sql.endswith("LIMIT 100")
    assert [item.pk for item in single] == ids[1501:1601]
    assert [e.pk for e in composite] == [e.pk for e in events[1501:1601]]


# resolve_keyset -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (Item, ("nope",), r"Item: 'nope' is not a field of the model"),
        (Tagged, ("tags",), r"Tagged: 'tags' is not a column"),
        (Tagged, ("maybe",), r"Tagged: maybe may be NULL; keyset columns must be NOT NULL"),
        (Tagged, ("label",), r"Tagged: \(label\) are not unique together"),
        (Event, ("kind",), r"Event: \(kind\) are not unique together"),
        (Event, ("created_at",), r"\('created_at', 'pk'\)"),
        (Item, (), r"cursor_fields for testapp.Item is empty"),
        (Item, ("pk", "id"), r"repeat a column"),
        # A conditional UniqueConstraint does not make the column unique.
        (BackfillRun, ("backfill_name",), r"\(backfill_name\) are not unique together"),
    ],
)
def test_resolve_keyset_refuses(model: Any, fields: tuple[str, ...], message: str) -> None:
    with pytest.raises(ImproperlyDefinedBackfill, match=message):
        resolve_keyset(model, fields)


@pytest.mark.parametrize(
    ("model", "fields", "attnames"),
    [
        (Item, ("pk",), ("id",)),
        (UUIDItem, ("pk",), ("id",)),
        (Event, ("kind", "amount"), ("kind", "amount")),
        (Event, ("created_at", "id"), ("created_at", "id")),
        (Event, ("created_at", "pk"), ("created_at", "id")),
        (Tagged, ("label", "pk"), ("label", "id")),
    ],
)
def test_resolve_keyset_accepts(
    model: Any, fields: tuple[str, ...], attnames: tuple[str, ...]
) -> None:
    keyset = resolve_keyset(model, fields)

    assert keyset.model is model
    assert keyset.attnames == attnames
    assert keyset.fields == tuple(model._meta.get_field(name) for name in attnames)


def test_unique_constraint_cursor_visits_every_row_once() -> None:
    Event.objects.bulk_create(
        Event(created_at=BASE_TIME, kind=kind, amount=Decimal(amount) / 100)
        for kind in ("b", "a", "é", "c")
        for amount in range(40, 0, -1)
    )
    expected = list(Event.objects.order_by("kind", "amount").values_list("pk", flat=True))

    visited, _ = visit_all(resolve_keyset(Event, ("kind", "amount")), Event.objects.all(), 9)

    assert visited == expected
    assert len(set(visited)) == 160


# check_queryset -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Item.objects.order_by("value"), r"ordered queryset \(order_by\('value',\)\)"),
        (lambda: Item.objects.all()[:10], r"sliced queryset"),
        (lambda: Item.objects.values("id"), r"model instances, not values\(\)"),
        (lambda: Item.objects.values_list("id", flat=True), r"not values\(\)"),
        (
            lambda: Event.objects.all(),
            r"returns testapp.Event rows but the backfill's model is testapp.Item",
        ),
        (lambda: Item.objects.distinct("value"), r"must not use distinct\(\*fields\)"),
        (lambda: Item.objects.reverse(), r"reversed queryset; remove reverse\(\)"),
        (
            lambda: Item.objects.select_for_update(skip_locked=True),
            r"skip_locked=True\), which would skip locked rows",
        ),
        (lambda: Item.objects.filter(value=1).union(Item.objects.all()), r"union\(\)"),
        (lambda: list(Item.objects.all()), r"must return a QuerySet"),
    ],
)
def test_check_queryset_refuses(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ImproperlyDefinedBackfill, match=message) as raised:
        check_queryset(make(), Item, "Touch.get_queryset()")
    assert str(raised.value).startswith("Touch.get_queryset()")


def test_check_queryset_accepts_a_filtered_queryset() -> None:
    check_queryset(Item.objects.filter(value__gte=3).exclude(value=7), Item, "origin")


def test_default_ordering_is_accepted_and_replaced_by_the_keyset() -> None:
    assert BackfillRun._meta.ordering == ["-created_at", "-id"]
    runs = [
        BackfillRun.objects.create(backfill_name=f"run-{i}", batch_size=10, status="succeeded")
        for i in range(12)
    ]
    queryset = BackfillRun.objects.all()
    check_queryset(queryset, BackfillRun, "origin")
    assert queryset.first() == runs[-1], "Meta.ordering no longer applies"

    visited, sizes = visit_all(resolve_keyset(BackfillRun, ("pk",)), queryset, 5)

    assert visited == [run.pk for run in runs]
    assert sizes == [5, 5, 2]


def test_multi_valued_filter_visits_every_row_once() -> None:
    tagged = Tagged.objects.bulk_create(Tagged(label=f"t{i}") for i in range(6))
    for row in tagged:
        row.tags.add(*[other for other in tagged if other is not row])
    queryset = Tagged.objects.filter(tags__label__startswith="t")
    check_queryset(queryset, Tagged, "origin")

    visited, _ = visit_all(resolve_keyset(Tagged, ("pk",)), queryset, 4)

    assert visited == [row.pk for row in tagged]


def test_plain_distinct_is_accepted_and_visits_every_row_once() -> None:
    tagged = Tagged.objects.bulk_create(Tagged(label=f"t{i}") for i in range(6))
    for row in tagged:
        row.tags.add(*[other for other in tagged if other is not row])
    queryset = Tagged.objects.filter(tags__label__startswith="t").distinct()
    check_queryset(queryset, Tagged, "origin")

    visited, sizes = visit_all(resolve_keyset(Tagged, ("pk",)), queryset, 4)

    assert visited == [row.pk for row in tagged]
    assert sizes == [4, 2]


# --- BatchReader: compiled once, instances without Django's general-purpose __init__ -------


def described(objs: list[Any]) -> list[tuple[type, str | None, bool, dict[str, Any]]]:
    """Everything an instance holds: its class, its state and its attributes."""
    return [
        (
            type(obj),
            obj._state.db,
            obj._state.adding,
            {key: value for key, value in vars(obj).items() if key != "_state"},
        )
        for obj in objs
    ]


def read(queryset: QuerySet[Any]) -> list[Any]:
    """One batch of everything, as a run reads it."""
    return BatchReader(resolve_keyset(queryset.model, ("pk",)), queryset).batch(None, 1000)


def make_comments_with_documents() -> None:
    for i in range(3):
        comment = Comment.objects.create(
            author=f"a{i}", body="x" * i, created_at=BASE_TIME, body_length=None if i else 0
        )
        SearchDocument.objects.create(
            comment=comment, author=comment.author, text="", word_count=i, indexed_at=BASE_TIME
        )


@pytest.mark.parametrize(
    "queryset",
    [
        pytest.param(lambda: Item.objects.all(), id="integers"),
        pytest.param(lambda: UUIDItem.objects.all(), id="uuid-pk"),
        pytest.param(lambda: Event.objects.all(), id="datetime-decimal-date"),
        pytest.param(lambda: Comment.objects.all(), id="text-bool-nullable"),
        pytest.param(lambda: SearchDocument.objects.all(), id="one-to-one"),
        pytest.param(lambda: Item.objects.filter(value__gte=1), id="filtered"),
    ],
)
def test_instances_are_what_django_builds(queryset: Callable[[], QuerySet[Any]]) -> None:
    make_items(3)
    UUIDItem.objects.bulk_create(UUIDItem(visits=i) for i in range(3))
    make_events(6)
    make_comments_with_documents()

    built = read(queryset())
    assert built, "the test needs rows"
    assert described(built) == described(list(queryset().order_by("pk")))
    # And they behave as saved instances.
    first = built[0]
    first.save()
    first.refresh_from_db()


@isolate_apps("tests.testapp")
def test_a_column_named_as_a_python_keyword_is_built_too() -> None:
    # Not a name a class body can declare, but one a model made with type() can have.
    meta = type("Meta", (), {"app_label": "testapp"})
    attributes = {"__module__": __name__, "Meta": meta, "from": models.IntegerField()}
    model: Any = type("KeywordColumn", (models.Model,), attributes)
    names, rows = ["id", "from"], [(1, 10), (2, 20)]

    built = build_instances(model, "default", names, rows)

    assert described(built) == described([model.from_db("default", names, row) for row in rows])


def test_the_reader_keeps_to_django_where_it_does_more_than_build_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_comments_with_documents()

    def documents() -> QuerySet[SearchDocument]:
        return SearchDocument.objects.all()  # a fresh queryset: nothing cached

    related = read(documents().select_related("comment"))
    assert related[0]._state.fields_cache["comment"].author == "a0"
    annotated = read(documents().annotate(doubled=F("word_count") * 2))
    assert [document.doubled for document in annotated] == [0, 2, 4]
    deferred = read(documents().defer("text"))
    assert deferred[0].get_deferred_fields() == {"text"}
    with CaptureQueriesContext(connection) as queries:
        prefetched = read(Comment.objects.prefetch_related("search_document"))
        assert [comment.search_document.word_count for comment in prefetched] == [0, 1, 2]
    assert len(queries) == 2

    seen: list[Any] = []

    def listener(sender: type, instance: Any, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(listener, sender=SearchDocument)
    try:
        assert described(read(documents())) == described(seen)
    finally:
        post_init.disconnect(listener, sender=SearchDocument)

    from_db_calls: list[Any] = []
    original = SearchDocument.from_db.__func__  # type: ignore[attr-defined]

    def counting_from_db(cls: type, db: str, field_names: list[str], values: Any) -> Any:
        from_db_calls.append(values)
        return original(cls, db, field_names, values)

    monkeypatch.setattr(SearchDocument, "from_db", classmethod(counting_from_db))
    assert len(read(documents())) == len(from_db_calls) == 3


def test_a_reader_compiles_its_select_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    make_items(1000)
    compiled: list[str] = []
    as_sql = SQLCompiler.as_sql

    def counting(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        sql, params = as_sql(self, *args, **kwargs)
        compiled.append(sql)
        return sql, params

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    keyset = resolve_keyset(Item, ("pk",))
    visited, sizes = visit_all(keyset, Item.objects.filter(value__gte=0), 90)

    assert len(visited) == 1000 and len(sizes) == 12
    # The first batch (no cursor yet), then every later one: one statement each.
    assert len(compiled) == 2, compiled


def test_a_reader_of_an_empty_queryset_reads_nothing() -> None:
    make_items(10)
    keyset = resolve_keyset(Item, ("pk",))
    with CaptureQueriesContext(connection) as queries:
        assert BatchReader(keyset, Item.objects.none()).batch(None, 100) == []
    assert len(queries) == 0


# --- rows read ahead with the previous batch's checkpoint ---------------------------------


def test_a_batch_takes_the_rows_read_ahead_for_it_without_a_query() -> None:
    ids = make_items(6)
    reader = BatchReader(resolve_keyset(Item, ("pk",)), Item.objects.all())
    cursor = {"id": ids[2]}
    ahead = reader.read_ahead(cursor, 3, "default")
    assert ahead is not None
    with connection.cursor() as db_cursor:
        db_cursor.execute(*ahead)
        reader.keep_read_ahead(cursor, 3, db_cursor.fetchall())

    with CaptureQueriesContext(connection) as queries:
        batch = reader.batch(cursor, 3)

    assert len(queries) == 0
    assert described(batch) == described(list(Item.objects.filter(pk__in=ids[3:]).order_by("pk")))
    # Taken once: the same batch asked again reads for itself.
    with CaptureQueriesContext(connection) as queries:
        assert [item.pk for item in reader.batch(cursor, 3)] == ids[3:]
    assert len(queries) == 1


def test_rows_read_ahead_for_another_batch_or_too_long_ago_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = make_items(6)
    reader = BatchReader(resolve_keyset(Item, ("pk",)), Item.objects.all())
    cursor = {"id": ids[2]}
    stale = [(ids[3], -1, 0)]  # what the database does not hold: used only if taken

    reader.keep_read_ahead(cursor, 3, stale)
    assert [item.value for item in reader.batch(cursor, 2)] == [3, 4]  # another size
    reader.keep_read_ahead(cursor, 3, stale)
    assert [item.value for item in reader.batch({"id": ids[1]}, 3)] == [2, 3, 4]  # another cursor
    monkeypatch.setattr(iteration, "READ_AHEAD_MAX_AGE", -1.0)  # a run held past the limit
    reader.keep_read_ahead(cursor, 3, stale)
    assert [item.value for item in reader.batch(cursor, 3)] == [3, 4, 5]


def test_rows_are_not_read_ahead_where_the_next_batch_must_read_them_itself() -> None:
    keyset = resolve_keyset(Item, ("pk",))
    cursor = {"id": 1}

    assert BatchReader(keyset, Item.objects.all()).read_ahead(cursor, 3, "default") is not None
    # Locked rows must be locked by the transaction that writes them.
    locking = BatchReader(keyset, Item.objects.select_for_update())
    assert locking.read_ahead(cursor, 3, "default") is None
    # Read elsewhere than where the checkpoint commits.
    assert BatchReader(keyset, Item.objects.all()).read_ahead(cursor, 3, "other") is None
    # Read through the ORM.
    related = BatchReader(resolve_keyset(SearchDocument, ("pk",)), SearchDocument.objects.all())
    assert related.read_ahead(cursor, 3, "default") is not None
    joined = SearchDocument.objects.select_related("comment")
    assert (
        BatchReader(resolve_keyset(SearchDocument, ("pk",)), joined).read_ahead(
            cursor, 3, "default"
        )
        is None
    )
