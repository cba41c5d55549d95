"""`backfills.writes` on real PostgreSQL: the unnest statement and Django's fallback write the
same values, to exactly the rows and columns given, and bad calls are refused up front."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, DataError, connection, transaction
from django.db.backends.mysql.features import DatabaseFeatures as MySQLFeatures
from django.db.models import F, Model
from django.test.utils import CaptureQueriesContext

from backfills.models import BackfillRun
from backfills.writes import bulk_update, bulk_upsert, django_bulk_update, upsert_options
from example.models import Comment, SearchDocument
from tests.testapp.models import Event, Item, Tagged, UUIDItem

pytestmark = pytest.mark.django_db

AT = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
INDIA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))

Writer = Callable[[Sequence[Any], Sequence[str]], int]


def fallback(objs: Sequence[Any], fields: Sequence[str]) -> int:
    """The portable path, called directly: what SQLite and MySQL get."""
    return django_bulk_update(type(objs[0]), list(objs), fields, DEFAULT_DB_ALIAS)


WRITERS = [pytest.param(bulk_update, id="unnest"), pytest.param(fallback, id="django")]


def rows(model: type[Model]) -> dict[Any, dict[str, Any]]:
    return {row["pk"]: row for row in model._base_manager.values(*_columns(model), pk=F("pk"))}


def _columns(model: type[Model]) -> list[str]:
    return [field.attname for field in model._meta.concrete_fields]


def make_comments(count: int) -> list[Comment]:
    return Comment.objects.bulk_create(
        Comment(
            author=f"author {i}",
            body=f"body {i}",
            created_at=AT + datetime.timedelta(minutes=i),
            body_length=i,
        )
        for i in range(count)
    )


@pytest.mark.parametrize("write", WRITERS)
def test_text_datetime_bool_and_null_reach_exactly_the_given_rows(write: Writer) -> None:
    comments = make_comments(6)
    before = rows(Comment)
    first, second, third = (Comment.objects.get(pk=comments[i].pk) for i in (1, 3, 4))
    # Characters that array literals and SQL quoting treat specially, and the word NULL.
    first.author, first.body = 'O\'Brien "q"', "a,{b}\\c\nd"
    first.created_at = datetime.datetime(2021, 6, 1, 12, 30, 15, 123456, tzinfo=INDIA)
    first.is_deleted, first.body_length = True, None
    second.author, second.body = "NULL", ""
    second.created_at = datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    second.is_deleted, second.body_length = False, 2_000_000_000
    third.author, third.body = "Zoë ✓", "x" * 10_000
    third.created_at = AT
    third.is_deleted, third.body_length = True, 0

    fields = ["author", "body", "created_at", "is_deleted", "body_length"]
    assert write([first, second, third], fields) == 3

    after = rows(Comment)
    for obj in (first, second, third):
        assert after[obj.pk] == {
            "pk": obj.pk,
            "id": obj.pk,
            **{name: getattr(obj, name) for name in fields},
        }
    assert after[first.pk]["created_at"] == datetime.datetime(
        2021, 6, 1, 7, 0, 15, 123456, tzinfo=datetime.UTC
    )
    untouched = set(before) - {first.pk, second.pk, third.pk}
    assert len(untouched) == 3
    assert {pk: after[pk] for pk in untouched} == {pk: before[pk] for pk in untouched}


@pytest.mark.parametrize("write", WRITERS)
def test_only_the_named_fields_are_written(write: Writer) -> None:
    comment = make_comments(1)[0]
    comment.author = "not written"
    comment.body_length = 99
    assert write([comment], ["body_length"]) == 1
    stored = Comment.objects.get(pk=comment.pk)
    assert (stored.author, stored.body_length) == ("author 0", 99)


@pytest.mark.parametrize("write", WRITERS)
def test_decimal_date_and_nullable_date(write: Writer) -> None:
    events = Event.objects.bulk_create(
        Event(created_at=AT, kind=f"k{i}", amount=Decimal(i), day=datetime.date(2020, 1, 1))
        for i in range(4)
    )
    before = rows(Event)
    events[0].amount, events[0].day = Decimal("12345678.1234"), None
    events[2].amount, events[2].day = Decimal("-0.0001"), datetime.date(1970, 1, 2)
    assert write([events[0], events[2]], ["amount", "day"]) == 2
    after = rows(Event)
    assert (after[events[0].pk]["amount"], after[events[0].pk]["day"]) == (
        Decimal("12345678.1234"),
        None,
    )
    assert (after[events[2].pk]["amount"], after[events[2].pk]["day"]) == (
        Decimal("-0.0001"),
        datetime.date(1970, 1, 2),
    )
    for untouched in (events[1], events[3]):
        assert after[untouched.pk] == before[untouched.pk]


@pytest.mark.parametrize("write", WRITERS)
def test_foreign_key_by_object_and_by_attname(write: Writer) -> None:
    comments = make_comments(5)
    documents = SearchDocument.objects.bulk_create(
        SearchDocument(comment=c, author="a", text="t", word_count=1, indexed_at=AT)
        for c in comments[:3]
    )
    before = rows(SearchDocument)
    documents[0].comment = comments[3]
    documents[0].word_count = 7
    documents[1].comment_id = comments[4].pk
    documents[1].word_count = 8
    assert write([documents[0], documents[1]], ["comment", "word_count"]) == 2
    after = rows(SearchDocument)
    assert (after[documents[0].pk]["comment_id"], after[documents[0].pk]["word_count"]) == (
        comments[3].pk,
        7,
    )
    assert (after[documents[1].pk]["comment_id"], after[documents[1].pk]["word_count"]) == (
        comments[4].pk,
        8,
    )
    assert after[documents[2].pk] == before[documents[2].pk]
    # The attname names the same column.
    documents[2].comment_id = comments[0].pk
    assert write([documents[2]], ["comment_id"]) == 1
    assert SearchDocument.objects.get(pk=documents[2].pk).comment_id == comments[0].pk


@pytest.mark.parametrize("write", WRITERS)
def test_uuid_primary_key(write: Writer) -> None:
    items = UUIDItem.objects.bulk_create(UUIDItem() for _ in range(3))
    items[0].visits, items[2].visits = 5, 6
    assert write([items[0], items[2]], ["visits"]) == 2
    visits = dict(UUIDItem.objects.values_list("pk", "visits"))
    assert visits == {items[0].pk: 5, items[1].pk: 0, items[2].pk: 6}


def test_postgresql_writes_a_batch_in_one_unnest_statement() -> None:
    Item.objects.bulk_create(Item(value=i) for i in range(2500))
    items = list(Item.objects.order_by("pk"))
    for item in items:
        item.value = item.value * 2 + 1
        item.visits = 1
    with CaptureQueriesContext(connection) as queries:
        assert bulk_update(items, ["value", "visits"]) == 2500
    assert len(queries) == 1
    sql = queries[0]["sql"]
    assert sql.startswith('UPDATE "testapp_item" SET') and "unnest(" in sql
    assert sorted(Item.objects.values_list("value", "visits")) == [
        (i * 2 + 1, 1) for i in range(2500)
    ]


def test_postgresql_sends_the_arrays_as_parameters_not_as_quoted_sql_text() -> None:
    from django.db.backends.postgresql.base import ServerBindingCursor

    Item.objects.bulk_create(Item(value=i) for i in range(3))
    items = list(Item.objects.order_by("pk"))
    for item in items:
        item.value += 10
    cursors: list[Any] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        cursors.append(context["cursor"].cursor)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):  # Django's hooks still see the statement
        assert bulk_update(items, ["value"]) == 3
    assert [type(cursor) for cursor in cursors] == [ServerBindingCursor]
    assert sorted(Item.objects.values_list("value", flat=True)) == [10, 11, 12]


def test_a_column_of_only_nulls_and_a_column_of_big_integers() -> None:
    events = Event.objects.bulk_create(
        Event(created_at=AT, amount=i, day=datetime.date(2024, 1, i + 1)) for i in range(3)
    )
    for index, event in enumerate(events):
        event.day = None
        event.visits = 2**31 - 1 - index
    assert bulk_update(events, ["day", "visits"]) == 3
    assert sorted(Event.objects.values_list("day", "visits")) == [
        (None, 2**31 - 3),
        (None, 2**31 - 2),
        (None, 2**31 - 1),
    ]


def test_a_value_too_long_for_the_column_fails_instead_of_being_truncated() -> None:
    # (Django's own bulk_update casts its CASE to varchar(100) and stores 100 characters.)
    comment = make_comments(1)[0]
    comment.author = "x" * 101  # max_length=100
    with pytest.raises(DataError, match="too long"), transaction.atomic():
        bulk_update([comment], ["author"])
    assert Comment.objects.get(pk=comment.pk).author == "author 0"


def test_an_object_listed_twice_is_written_once_with_its_last_values() -> None:
    item = Item.objects.create(value=1)
    again = Item.objects.get(pk=item.pk)
    item.value, again.value = 10, 20
    assert bulk_update([item, again], ["value"]) == 1
    assert Item.objects.get(pk=item.pk).value == 20


def test_the_count_is_of_rows_that_exist() -> None:
    kept, gone = Item.objects.create(), Item.objects.create()
    Item.objects.filter(pk=gone.pk).delete()
    kept.value = gone.value = 3
    assert bulk_update([kept, gone], ["value"]) == 1
    assert list(Item.objects.values_list("value", flat=True)) == [3]


def test_expressions_fall_back_to_django() -> None:
    items = Item.objects.bulk_create(Item(value=i) for i in range(3))
    for item in items:
        item.value = F("value") + 10
    with CaptureQueriesContext(connection) as queries:
        assert bulk_update(items, ["value"]) == 3
    assert not any("unnest" in query["sql"] for query in queries)
    assert sorted(Item.objects.values_list("value", flat=True)) == [10, 11, 12]


def test_json_fields_fall_back_to_django() -> None:
    runs = [
        BackfillRun.objects.create(backfill_name=f"json-{i}", batch_size=1, status="succeeded")
        for i in range(3)
    ]
    runs[0].params = {"nested": [1, "two", None], "quote": "it's"}
    runs[1].params = {}
    runs[2].cursor = None
    with CaptureQueriesContext(connection) as queries:
        assert bulk_update(runs, ["params", "cursor"]) == 3
    assert not any("unnest" in query["sql"] for query in queries)
    stored = {run.pk: (run.params, run.cursor) for run in BackfillRun.objects.all()}
    assert stored == {
        runs[0].pk: ({"nested": [1, "two", None], "quote": "it's"}, None),
        runs[1].pk: ({}, None),
        runs[2].pk: ({}, None),
    }


@pytest.mark.parametrize(
    ("objs", "fields", "message"),
    [
        pytest.param(lambda: [Item.objects.create()], [], "at least one field", id="no-fields"),
        pytest.param(lambda: [Item.objects.create()], ["nope"], "no field 'nope'", id="unknown"),
        pytest.param(lambda: [Item.objects.create()], ["id"], "primary key", id="pk-by-name"),
        pytest.param(lambda: [Item.objects.create()], ["pk"], "primary key", id="pk-alias"),
        pytest.param(lambda: [Tagged.objects.create()], ["tags"], "not a column", id="m2m"),
        pytest.param(
            lambda: make_comments(1), ["search_document"], "not a column", id="reverse-relation"
        ),
        pytest.param(
            lambda: [Item.objects.create(), UUIDItem.objects.create()],
            ["visits"],
            "one model at a time; got objects of testapp.Item, testapp.UUIDItem",
            id="mixed-models",
        ),
        pytest.param(lambda: [Item(value=1)], ["value"], "no primary key", id="unsaved"),
        pytest.param(
            lambda: [
                SearchDocument(
                    pk=1, comment=Comment(), author="", text="", word_count=0, indexed_at=AT
                )
            ],
            ["comment"],
            "unsaved related object",
            id="unsaved-related",
        ),
    ],
)
def test_refusals(objs: Callable[[], list[Model]], fields: list[str], message: str) -> None:
    instances = objs()
    with CaptureQueriesContext(connection) as queries, pytest.raises(ValueError, match=message):
        bulk_update(instances, fields)
    assert len(queries) == 0


def test_no_objects_is_no_query() -> None:
    with CaptureQueriesContext(connection) as queries:
        assert bulk_update([], ["value"]) == 0
    assert len(queries) == 0


def test_upsert_inserts_new_rows_and_updates_existing_ones() -> None:
    comments = make_comments(4)
    SearchDocument.objects.bulk_create(
        SearchDocument(comment=c, author="old", text="old", word_count=1, indexed_at=AT)
        for c in comments[:2]
    )
    untouched = SearchDocument.objects.get(comment=comments[0])
    documents = [
        SearchDocument(comment=c, author="new", text=f"new {c.pk}", word_count=2, indexed_at=AT)
        for c in comments[1:]
    ]
    with CaptureQueriesContext(connection) as queries:
        written = bulk_upsert(
            SearchDocument,
            documents,
            unique_fields=["comment"],
            update_fields=["author", "text", "word_count"],
        )
    assert written == 3
    assert len(queries) == 1 and 'ON CONFLICT("comment_id") DO UPDATE' in queries[0]["sql"]
    stored = {
        doc.comment_id: (doc.author, doc.text, doc.word_count)
        for doc in SearchDocument.objects.all()
    }
    assert stored == {
        comments[0].pk: ("old", "old", 1),
        comments[1].pk: ("new", f"new {comments[1].pk}", 2),
        comments[2].pk: ("new", f"new {comments[2].pk}", 2),
        comments[3].pk: ("new", f"new {comments[3].pk}", 2),
    }
    assert SearchDocument.objects.get(comment=comments[0]).pk == untouched.pk


def test_upsert_names_the_conflict_target_only_where_the_backend_can() -> None:
    assert upsert_options(connection.features, ["comment"], ["text"]) == {
        "update_conflicts": True,
        "unique_fields": ["comment"],
        "update_fields": ["text"],
    }
    # MySQL/MariaDB: ON DUPLICATE KEY UPDATE takes no target, and Django refuses one.
    assert MySQLFeatures.supports_update_conflicts_with_target is False
    mysql_like = copy.copy(connection.features)
    mysql_like.supports_update_conflicts_with_target = False
    assert upsert_options(mysql_like, ["comment"], ["text"]) == {
        "update_conflicts": True,
        "update_fields": ["text"],
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unique_fields": [], "update_fields": ["text"]}, "needs unique_fields"),
        ({"unique_fields": ["comment"], "update_fields": []}, "needs update_fields"),
    ],
)
def test_upsert_refusals(kwargs: dict[str, Any], message: str) -> None:
    comment = make_comments(1)[0]
    document = SearchDocument(comment=comment, author="", text="", word_count=0, indexed_at=AT)
    with pytest.raises(ValueError, match=message):
        bulk_upsert(SearchDocument, [document], **kwargs)
    with pytest.raises(ValueError, match=r"got objects of example\.Comment"):
        bulk_upsert(SearchDocument, [comment], unique_fields=["comment"], update_fields=["text"])
    assert not SearchDocument.objects.exists()


def test_integer_columns_with_nulls_and_negative_numbers() -> None:
    tagged = Tagged.objects.bulk_create(Tagged(label=f"t{i}", maybe=i) for i in range(4))
    for row, maybe in zip(tagged, [None, -5, 2**31 - 1, None], strict=True):
        row.maybe = maybe
    assert bulk_update(tagged, ["maybe"]) == 4
    assert list(Tagged.objects.order_by("pk").values_list("maybe", flat=True)) == [
        None,
        -5,
        2**31 - 1,
        None,
    ]
    tagged[0].maybe = True  # a bool in an integer column: written as 1, as save() writes it
    assert bulk_update(tagged[:1], ["maybe"]) == 1
    assert Tagged.objects.get(pk=tagged[0].pk).maybe == 1
