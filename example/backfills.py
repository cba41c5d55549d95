"""What a user of the app writes: backfills over the host app's own models."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from backfills import ModelBackfill, register
from backfills.writes import bulk_update, bulk_upsert
from example.models import Comment, ImportedDocument, LegacyComment, SearchDocument


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()


@register
class CopyCommentsToSearch(ModelBackfill):
    """Copy live comments into search documents (an upsert: safe to run twice)."""

    name = "copy-comments-to-search"
    model = Comment
    batch_size = 1000

    def get_queryset(self) -> QuerySet[Comment]:
        return Comment.objects.filter(is_deleted=False)

    def process_batch(self, batch: list[Comment]) -> None:
        now = timezone.now()
        documents = [
            SearchDocument(
                comment=comment,
                author=comment.author,
                text=normalise(comment.body),
                word_count=len(comment.body.split()),
                indexed_at=now,
            )
            for comment in batch
        ]
        bulk_upsert(
            SearchDocument,
            documents,
            unique_fields=["comment"],
            update_fields=["author", "text", "word_count", "indexed_at"],
        )


@register
class FillBodyLength(ModelBackfill):
    """Fill the derived column Comment.body_length in place."""

    name = "fill-body-length"
    model = Comment
    batch_size = 1000

    class Parameters(forms.Form):
        only_missing = forms.BooleanField(
            required=False, initial=True, help_text="Skip comments whose length is set."
        )

    def get_queryset(self) -> QuerySet[Comment]:
        comments = Comment.objects.all()
        if self.params.get("only_missing", True):
            comments = comments.filter(body_length__isnull=True)
        return comments

    def process_batch(self, batch: list[Comment]) -> None:
        for comment in batch:
            comment.body_length = len(comment.body)
        # One UPDATE ... FROM unnest(...) on PostgreSQL; Django's bulk_update elsewhere.
        bulk_update(batch, ["body_length"])


@register
class ReindexByCreation(ModelBackfill):
    """Re-index search documents oldest first: a composite cursor (created_at, id)."""

    name = "reindex-by-creation"
    model = Comment
    batch_size = 500
    cursor_fields = ("created_at", "id")

    class Parameters(forms.Form):
        since = forms.DateTimeField(required=False, help_text="Only comments created since.")

    def get_queryset(self) -> QuerySet[Comment]:
        comments = Comment.objects.filter(is_deleted=False)
        since: Any = self.params.get("since")
        if since:
            comments = comments.filter(created_at__gte=since)
        return comments

    def process_batch(self, batch: list[Comment]) -> None:
        now = timezone.now()
        SearchDocument.objects.filter(comment__in=batch).update(indexed_at=now)


@register
class ImportLegacyComments(ModelBackfill):
    """Copy comments from the legacy service's database into search documents here."""

    name = "import-legacy-comments"
    model = LegacyComment
    # Read from the other service's database. The writes go to the run row's database, so
    # each batch and its checkpoint commit together: exactly once.
    source_database = "legacy"
    batch_size = 1000

    def process_batch(self, batch: list[LegacyComment]) -> None:
        now = timezone.now()
        bulk_upsert(
            ImportedDocument,
            [
                ImportedDocument(
                    legacy_comment_id=comment.pk,
                    author=comment.author,
                    text=normalise(comment.body),
                    word_count=len(comment.body.split()),
                    indexed_at=now,
                )
                for comment in batch
            ],
            unique_fields=["legacy_comment_id"],
            update_fields=["author", "text", "word_count", "indexed_at"],
        )
