from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from example.models import Comment, LegacyComment

WORDS = [
    "backfill",
    "cursor",
    "batch",
    "keyset",
    "temporal",
    "worker",
    "heartbeat",
    "django",
    "row",
    "index",
]
CHUNK = 5000


class Command(BaseCommand):
    help = "Insert demo comments (deterministic content) for the example backfills."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=20_000)
        parser.add_argument("--if-empty", action="store_true", help="Do nothing if comments exist.")
        parser.add_argument(
            "--legacy",
            action="store_true",
            help="Seed the legacy service's comments (the 'legacy' database) instead.",
        )

    def handle(self, *, rows: int, if_empty: bool, legacy: bool, **options: Any) -> None:
        if legacy:
            self.seed_legacy(rows, if_empty)
            return
        if if_empty and Comment.objects.exists():
            self.stdout.write(f"{Comment.objects.count():,} comments already there.")
            return
        rng = random.Random(7)
        start = timezone.now() - timedelta(days=365)
        for offset in range(0, rows, CHUNK):
            with transaction.atomic():
                Comment.objects.bulk_create(
                    Comment(
                        author=f"user{rng.randrange(500)}",
                        body=" ".join(rng.choices(WORDS, k=rng.randrange(3, 40))),
                        # Ties on created_at on purpose: the composite cursor must handle them.
                        created_at=start + timedelta(minutes=(offset + i) // 3),
                        is_deleted=rng.random() < 0.05,
                    )
                    for i in range(min(CHUNK, rows - offset))
                )
        self.stdout.write(f"Inserted {rows:,} comments.")

    def seed_legacy(self, rows: int, if_empty: bool) -> None:
        if if_empty and LegacyComment.objects.exists():
            self.stdout.write(f"{LegacyComment.objects.count():,} legacy comments already there.")
            return
        rng = random.Random(11)
        start = timezone.now() - timedelta(days=3650)
        for offset in range(0, rows, CHUNK):
            with transaction.atomic(using="legacy"):
                LegacyComment.objects.bulk_create(
                    LegacyComment(
                        author=f"legacy{rng.randrange(100)}",
                        body=" ".join(rng.choices(WORDS, k=rng.randrange(3, 40))),
                        created_at=start + timedelta(hours=offset + i),
                    )
                    for i in range(min(CHUNK, rows - offset))
                )
        self.stdout.write(f"Inserted {rows:,} legacy comments.")
