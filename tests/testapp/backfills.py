"""Backfills the tests run through real workers. Each one increments `visits`, so the tests
can count that every row was processed exactly once."""

from __future__ import annotations

import time
from typing import Any

from django import forms
from django.db import connection
from django.db.models import F, IntegerField, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Mod
from temporalio import activity

from backfills import ModelBackfill, UpdateBackfill, register
from backfills.writes import bulk_update
from tests.testapp.models import CopiedItem, Event, Item, UUIDItem


class TouchParameters(forms.Form):
    sleep = forms.FloatField(required=False, initial=0.0, min_value=0)
    #: Raise in the batch that holds this item id ...
    poison_id = forms.IntegerField(required=False)
    #: ... only on the first attempt (a transient error) instead of every time.
    transient = forms.BooleanField(required=False, initial=False)


def touch(model: Any, batch: list[Any], params: dict[str, Any]) -> None:
    ids = [row.pk for row in batch]
    poison = params.get("poison_id")
    if poison is not None and poison in ids:
        first_attempt = activity.in_activity() and activity.info().attempt == 1
        if first_attempt or not params.get("transient"):
            raise ValueError(f"poisoned row {poison}")
    model.objects.filter(pk__in=ids).update(visits=F("visits") + 1)
    if params.get("sleep"):
        time.sleep(params["sleep"])


@register
class TouchItems(ModelBackfill):
    """Increment Item.visits."""

    name = "touch-items"
    model = Item
    batch_size = 100
    Parameters = TouchParameters

    def process_batch(self, batch: list[Item]) -> None:
        touch(Item, batch, self.params)


@register
class TouchOddItems(TouchItems):
    """Only items with an odd value: a filtered queryset."""

    name = "touch-odd-items"

    def get_queryset(self) -> QuerySet[Item]:
        return Item.objects.alias(parity=Mod("value", 2)).filter(parity=1)


@register
class TouchUUIDItems(ModelBackfill):
    name = "touch-uuid-items"
    model = UUIDItem
    Parameters = TouchParameters

    def process_batch(self, batch: list[UUIDItem]) -> None:
        touch(UUIDItem, batch, self.params)


@register
class TouchEvents(ModelBackfill):
    """A composite cursor with ties on its first column."""

    name = "touch-events"
    model = Event
    cursor_fields = ("created_at", "id")
    Parameters = TouchParameters

    def process_batch(self, batch: list[Event]) -> None:
        touch(Event, batch, self.params)


class SleepParameters(forms.Form):
    sleep = forms.FloatField(required=False, initial=0.0, min_value=0)


@register
class VisitItemsInSQL(UpdateBackfill):
    """Increment Item.visits in SQL. `sleep` slows each batch: on PostgreSQL inside the batch's
    statement (so that a kill lands mid-transaction), elsewhere between batches."""

    name = "visit-items-in-sql"
    model = Item
    batch_size = 100
    Parameters = SleepParameters

    def get_update(self) -> dict[str, Any]:
        visits: Any = F("visits") + 1
        if self.params.get("sleep") and connection.vendor == "postgresql":
            # An uncorrelated subquery: evaluated once per statement, not once per row.
            pause = RawSQL("(SELECT 0 FROM pg_sleep(%s))", [self.params["sleep"]], IntegerField())
            visits = visits + pause
        return {"visits": visits}

    def throttle(self) -> float | None:
        if not self.params.get("sleep") or connection.vendor == "postgresql":
            return None
        # Asked again after each wait, until it says no: once a batch, every other answer.
        self._waited = not getattr(self, "_waited", False)
        return float(self.params["sleep"]) if self._waited else None


# --- Benchmarks (bench/throughput.py): run by real worker processes, so registered here ---


class BenchParameters(forms.Form):
    #: Only rows with id <= this (the benchmark's smaller run); all rows without it.
    up_to_id = forms.IntegerField(required=False, min_value=0)


@register
class BenchTransform(ModelBackfill):
    """Benchmark: a Python transform of Item.value written with backfills.writes.bulk_update."""

    name = "bench-transform"
    model = Item
    batch_size = 1000
    Parameters = BenchParameters

    def get_queryset(self) -> QuerySet[Item]:
        items = Item.objects.all()
        if self.params.get("up_to_id") is not None:
            items = items.filter(id__lte=self.params["up_to_id"])
        return items

    def process_batch(self, batch: list[Item]) -> None:
        for item in batch:
            item.value = item.value * 2 + 1
        bulk_update(batch, ["value"])


@register
class BenchSetBased(UpdateBackfill):
    """Benchmark: the same transform as one UPDATE per keyset range."""

    name = "bench-set-based"
    model = Item
    batch_size = 1000
    update = {"value": F("value") * 2 + 1}


@register
class CopyItemsAcross(ModelBackfill):
    """Copy items into another database: its checkpoint commits there, with each batch."""

    name = "copy-items-across"
    model = Item
    target_database = "other"
    Parameters = TouchParameters

    def process_batch(self, batch: list[Item]) -> None:
        CopiedItem.objects.using(self.target_database).bulk_create(
            CopiedItem(source_id=item.pk, value=item.value) for item in batch
        )
        if self.params.get("sleep"):
            time.sleep(self.params["sleep"])
