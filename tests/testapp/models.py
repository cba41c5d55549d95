"""Tables the tests fill and backfill. `visits` counts how often a backfill processed a row:
after any run, crash or retry it must be exactly 1 for every row the run covered."""

from __future__ import annotations

import uuid

from django.db import models


class Item(models.Model):
    value = models.IntegerField(default=0)
    visits = models.IntegerField(default=0)


class UUIDItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    visits = models.IntegerField(default=0)


class Event(models.Model):
    created_at = models.DateTimeField()
    kind = models.CharField(max_length=20, default="")
    amount = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    day = models.DateField(null=True)
    visits = models.IntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["created_at", "id"], name="event_created_id")]
        constraints = [
            models.UniqueConstraint(fields=["kind", "amount"], name="event_kind_amount_unique")
        ]


class Tagged(models.Model):
    """A table with a non-unique and a nullable column, to test refused cursors."""

    label = models.CharField(max_length=20)
    maybe = models.IntegerField(null=True, unique=True)
    tags = models.ManyToManyField("self", blank=True)


class CopiedItem(models.Model):
    """Where `copy-items-across` writes, in another database than the run row's. The unique
    source id makes a repeated row fail loudly instead of hiding as a duplicate."""

    source_id = models.BigIntegerField(unique=True)
    value = models.IntegerField()
