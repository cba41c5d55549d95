"""Cursors survive JSON exactly: `encode_value` then `Keyset.decode` gives back the very value
read from the row, so a resumed run continues right after the last committed row."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from backfills.exceptions import ImproperlyDefinedBackfill
from backfills.iteration import Cursor, Keyset, encode_value, resolve_keyset
from tests.testapp.models import Event, Item, Tagged, UUIDItem

IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


def keyset_of(model: Any, name: str) -> Keyset:
    """A one-column keyset on a real model field (unique or not: only decoding is tested)."""
    return Keyset(model=model, fields=(model._meta.get_field(name),))


def through_json(cursor: Cursor) -> Cursor:
    """The cursor as read back from the run row or from heartbeat details."""
    return json.loads(json.dumps(cursor))


def round_trip(keyset: Keyset, *values: Any) -> tuple[Any, ...]:
    cursor = {
        name: encode_value(value) for name, value in zip(keyset.attnames, values, strict=True)
    }
    return keyset.decode(through_json(cursor))


@pytest.mark.parametrize(
    ("model", "name", "value"),
    [
        (Item, "id", 1),
        (Item, "id", 2**53 + 1),
        (Item, "id", 2**63 - 1),
        (Item, "value", -(2**31)),
        (Event, "kind", "plain"),
        (Event, "kind", 'café ☕ 日本 \U0001f600 "quoted" \\ \n'),
        (Tagged, "label", ""),
        (UUIDItem, "id", uuid.UUID("00000000-0000-0000-0000-000000000001")),
        (UUIDItem, "id", uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479")),
        (Event, "day", datetime.date(2024, 2, 29)),
        (Event, "day", datetime.date(1, 1, 1)),
    ],
)
def test_value_round_trips_exactly(model: Any, name: str, value: Any) -> None:
    (decoded,) = round_trip(keyset_of(model, name), value)

    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 3, 1, 12, 30, tzinfo=datetime.UTC),
        datetime.datetime(2024, 3, 1, 12, 30, 0, 1, tzinfo=datetime.UTC),
        datetime.datetime(2024, 3, 1, 12, 30, 59, 123456, tzinfo=IST),
        datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=IST),
    ],
)
def test_aware_datetime_round_trips_exactly(value: datetime.datetime) -> None:
    keyset = resolve_keyset(Event, ("created_at", "id"))

    decoded, pk = round_trip(keyset, value, 7)

    assert decoded == value
    assert decoded.utcoffset() == value.utcoffset()
    assert decoded.microsecond == value.microsecond
    assert decoded.isoformat() == value.isoformat()
    assert pk == 7


@pytest.mark.parametrize(
    "value", ["1.2300", "0.0000", "-0.0001", "12345678.9000", "1E+3", "100", "0.1"]
)
def test_decimal_round_trips_exactly(value: str) -> None:
    (decoded,) = round_trip(keyset_of(Event, "amount"), Decimal(value))

    assert decoded == Decimal(value)
    assert str(decoded) == value
    assert isinstance(decoded, Decimal)


def test_cursor_of_an_instance_round_trips() -> None:
    keyset = resolve_keyset(Event, ("kind", "amount"))
    event = Event(kind="ünï", amount=Decimal("1.2300"))

    cursor = through_json(keyset.cursor_of(event))

    assert cursor == {"kind": "ünï", "amount": "1.2300"}
    kind, amount = keyset.decode(cursor)
    assert (kind, str(amount)) == ("ünï", "1.2300")


@pytest.mark.parametrize(
    "value", [b"\x00\xff", bytearray(b"x"), datetime.timedelta(seconds=1), object()]
)
def test_unsupported_type_is_refused(value: Any) -> None:
    with pytest.raises(ImproperlyDefinedBackfill, match=rf"Cannot use a {type(value).__name__} "):
        encode_value(value)


def test_null_is_refused() -> None:
    with pytest.raises(ImproperlyDefinedBackfill, match="holds NULL; cursor columns must be NOT"):
        encode_value(None)
    with pytest.raises(ImproperlyDefinedBackfill, match="holds NULL"):
        keyset_of(Event, "day").cursor_of(Event(day=None))


@pytest.mark.parametrize("cursor", [{"created_at": "2024-03-01T12:30:00+00:00"}, {"pk": 3}, {}])
def test_cursor_missing_a_field_is_refused(cursor: Cursor) -> None:
    keyset = resolve_keyset(Event, ("created_at", "id"))

    with pytest.raises(
        ImproperlyDefinedBackfill, match=r"lacks .*id: the backfill's cursor_fields changed"
    ):
        keyset.decode(cursor)


@pytest.mark.django_db
def test_cursor_read_from_the_database_resumes_right_after_its_row() -> None:
    moment = datetime.datetime(2024, 3, 1, 12, 30, 0, 123456, tzinfo=IST)
    micro = datetime.timedelta(microseconds=1)
    before = Event.objects.create(created_at=moment - micro, kind="k", amount=Decimal("1.2299"))
    saved = Event.objects.create(created_at=moment, kind="k", amount=Decimal("1.2300"))
    tie = Event.objects.create(created_at=moment, kind="k", amount=Decimal("1.2301"))
    later = Event.objects.create(created_at=moment + micro, kind="l", amount=Decimal("0"))
    row = Event.objects.get(pk=saved.pk)
    assert row.created_at == moment
    assert str(row.amount) == "1.2300"

    for fields in (("created_at", "id"), ("kind", "amount")):
        keyset = resolve_keyset(Event, fields)
        cursor = through_json(keyset.cursor_of(row))
        assert keyset.decode(cursor) == tuple(getattr(row, name) for name in fields)

        after = list(keyset.after(Event.objects.all(), cursor).values_list("pk", flat=True))

        assert after == [tie.pk, later.pk], fields
        assert before.pk not in after

    # A single column goes through `__gt`; the microsecond must survive to exclude the tie too.
    keyset = keyset_of(Event, "created_at")
    cursor = through_json(keyset.cursor_of(row))
    assert list(keyset.after(Event.objects.all(), cursor)) == [later]
