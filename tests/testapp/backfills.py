"""Backfills the tests run through real workers. Each one increments `visits`, so the tests
can count that every row was processed exactly once."""

from __future__ import annotations

import time
from typing import Any

from django import forms
from django.db.models import F, QuerySet
from django.db.models.functions import Mod
from temporalio import activity

from backfills import ModelBackfill, register
from tests.testapp.models import Event, Item, UUIDItem


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
