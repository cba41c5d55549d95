from __future__ import annotations

from django.contrib import admin

from example.models import Comment, SearchDocument


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    list_display = ["id", "author", "created_at", "is_deleted", "body_length"]


@admin.register(SearchDocument)
class SearchDocumentAdmin(admin.ModelAdmin):
    list_display = ["id", "comment", "author", "word_count", "indexed_at"]
