"""The host app's own models, shaped like the case that started the project: comments in one
table, and search documents derived from them in another."""

from __future__ import annotations

from django.db import models


class Comment(models.Model):
    author = models.CharField(max_length=100)
    body = models.TextField()
    created_at = models.DateTimeField(db_index=True)
    is_deleted = models.BooleanField(default=False)
    #: Derived from `body`; filled in place by the `fill-body-length` backfill.
    body_length = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at", "id"], name="comment_created_id")]

    def __str__(self) -> str:
        return f"Comment {self.pk} by {self.author}"


class SearchDocument(models.Model):
    comment = models.OneToOneField(
        Comment, on_delete=models.CASCADE, related_name="search_document"
    )
    author = models.CharField(max_length=100)
    text = models.TextField()
    word_count = models.PositiveIntegerField()
    indexed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"SearchDocument for comment {self.comment_id}"


class LegacyComment(models.Model):
    """A comment in another service's database (the "legacy" alias, see routers.py)."""

    author = models.CharField(max_length=100)
    body = models.TextField()
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Legacy comment {self.pk} by {self.author}"


class ImportedDocument(models.Model):
    """A search document made here from a legacy comment."""

    legacy_comment_id = models.BigIntegerField(unique=True)
    author = models.CharField(max_length=100)
    text = models.TextField()
    word_count = models.PositiveIntegerField()
    indexed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Document of legacy comment {self.legacy_comment_id}"
